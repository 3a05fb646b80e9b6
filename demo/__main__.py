"""``python -m demo`` is ``tft-demo``."""

import sys

from demo.cli import main

sys.exit(main())
