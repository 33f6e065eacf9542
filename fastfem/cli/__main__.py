"""``python -m fastfem.cli`` is the ``fastfem`` command."""

import sys

from fastfem.cli import main

sys.exit(main())
