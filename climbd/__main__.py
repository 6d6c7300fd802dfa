"""``python -m climbd``."""

import sys

from climbd.cli import main

sys.exit(main())
