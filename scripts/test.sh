#!/usr/bin/env bash
# Runs the whole test suite (about 10 minutes on 2 cores at most). Needs prometheus and promtool on PATH,
# and victoria-metrics and vmalert for the compatibility tests (tests/test_victoriametrics.py).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec python3 -m pytest -q "$@"
