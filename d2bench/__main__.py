"""``python -m d2bench`` runs the command line (the same as the ``d2bench`` script)."""

import sys

from d2bench.cli import main

sys.exit(main())
