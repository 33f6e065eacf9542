"""``python -m fastfem`` is the ``fastfem`` command."""

import sys

from fastfem.cli import main

sys.exit(main())
