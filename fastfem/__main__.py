"""``python -m fastfem`` is the ``fastfem`` command."""

import sys

from .cli import main

sys.exit(main())
