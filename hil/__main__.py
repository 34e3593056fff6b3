"""``python -m hil``: the same command as the installed ``hil`` entry point."""

import sys

from hil.cli import main

sys.exit(main())
