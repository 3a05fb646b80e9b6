#!/usr/bin/env bash
# Make sure the package and Prometheus are installed; safe to run again. Sourced by the scripts
# that run the main job. Installs the CPU build of torch FIRST: a bare `torch` requirement could
# otherwise pull a multi-GB CUDA build.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import exporter, forecaster, trainer, torch, pytorch_forecasting' 2>/dev/null; then
  if [ -z "${VIRTUAL_ENV:-}" ] && [ ! -w "$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" ]; then
    echo "== creating a virtual environment in $ROOT/.venv"
    "$PY" -m venv "$ROOT/.venv"
    PY="$ROOT/.venv/bin/python"
  fi
  echo "== installing torch (CPU build) and tft-monitor"
  "$PY" -m pip install --quiet torch==2.13.0
  "$PY" -m pip install --quiet -e "$ROOT"
fi
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing Debian's prometheus"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    echo "prometheus and promtool are missing: run  sudo apt-get install -y --no-install-recommends prometheus" >&2
    exit 1
  fi
fi
export TFT_PYTHON="$PY"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
