"""``python -m dcutmix.report``: the same as ``dcutmix-report``."""

import sys

from dcutmix.report.cli import main

sys.exit(main())
