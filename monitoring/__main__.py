"""``python3 -m monitoring``: the same command as ``tft-monitoring``, for a checkout not pip-installed."""

import sys

from monitoring.cli import main

sys.exit(main())
