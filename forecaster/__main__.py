"""``python -m forecaster`` is ``tft-forecaster``."""

import sys

from forecaster.cli import main

sys.exit(main())
