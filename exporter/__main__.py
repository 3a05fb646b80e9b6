"""``python -m exporter`` is the ``tft-exporter`` command."""

from exporter.cli import main

raise SystemExit(main())
