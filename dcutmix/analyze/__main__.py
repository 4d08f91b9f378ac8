"""``python -m dcutmix.analyze``: the same as ``dcutmix-analyze``."""

import sys

from dcutmix.analyze.cli import main

sys.exit(main())
