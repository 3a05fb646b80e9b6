#!/usr/bin/env bash
# The one-command demo: installs what is missing, then runs tft-demo with the arguments given.
#
#   ./demo.sh                       live view of the predictions until Ctrl-C
#   ./demo.sh --for 10m             non-interactive: a summary, exit 0 only if every incident the run
#                                   could judge was predicted at least 30 minutes ahead
#   ./demo.sh plot --instance web-01 --signal memory --out memory.png
#   ./demo.sh --help                every option
#
# What it sets up, only where missing (Debian 12 / Ubuntu 22.04+):
#   - Prometheus and promtool: Debian's `prometheus` package, installed with apt-get when run as
#     root; otherwise the exact command is printed and the script stops (status 1).
#   - Python packages: used as they are when python3 can import them (a system-wide or CI install);
#     otherwise a virtual environment .venv gets the CPU build of torch first (a plain
#     `pip install torch` can pull a multi-GB CUDA build), then this package with matplotlib.
#     TFT_TORCH_INDEX_URL overrides the CPU wheel index (set it empty to use pip's configuration).
set -euo pipefail
cd "$(dirname "$0")"

TORCH_VERSION=2.13.0
TORCH_INDEX_URL="${TFT_TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}"
NEEDED="import torch, lightning, pytorch_forecasting, safetensors, numpy, pandas, pyarrow, prometheus_client, \
apscheduler, requests, yaml, pydantic, matplotlib"

say() { echo "[demo.sh] $*" >&2; }
is_root() { [ "$(id -u)" = 0 ]; }
apt_install() {
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}
importable() { "$1" -c "$NEEDED" >/dev/null 2>&1; }

if ! command -v python3 >/dev/null; then
  say "python3 is missing; install it: sudo apt-get install -y python3 python3-venv"
  exit 1
fi

# Prometheus first: it is quick to check, and without root the script stops before any long install.
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  if is_root && command -v apt-get >/dev/null; then
    say "installing Debian's prometheus (prometheus and promtool) ..."
    apt_install prometheus
  else
    say "Prometheus is not installed. Install it, then run ./demo.sh again:"
    say "  sudo apt-get update && sudo apt-get install -y --no-install-recommends prometheus"
    exit 1
  fi
fi

PY=python3
if importable python3; then
  :
elif [ -x .venv/bin/python ] && importable .venv/bin/python; then
  PY=.venv/bin/python
else
  if [ ! -x .venv/bin/pip ]; then
    say "creating the virtual environment .venv ..."
    rm -rf .venv
    if ! python3 -m venv .venv >/dev/null 2>&1; then
      rm -rf .venv
      if is_root && command -v apt-get >/dev/null; then
        say "installing Debian's python3-venv ..."
        apt_install python3-venv
        python3 -m venv .venv
      else
        say "python3 cannot create a virtual environment. Install venv support, then run ./demo.sh again:"
        say "  sudo apt-get install -y python3-venv"
        exit 1
      fi
    fi
  fi
  if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    say "installing the CPU build of torch ${TORCH_VERSION} (about 200 MB) ..."
    if [ -n "$TORCH_INDEX_URL" ]; then
      .venv/bin/python -m pip install --quiet "torch==${TORCH_VERSION}" --index-url "$TORCH_INDEX_URL"
    else
      .venv/bin/python -m pip install --quiet "torch==${TORCH_VERSION}"
    fi
  fi
  say "installing tft-monitor and its dependencies into .venv ..."
  .venv/bin/python -m pip install --quiet -e '.[plot]'
  PY=.venv/bin/python
fi

exec "$PY" -m demo "$@"
