#!/usr/bin/env bash
# The main job, end to end on this machine, with nothing left running afterwards:
#   1. backfill DAYS of a `degrading` simulated fleet into a private Prometheus (127.0.0.1),
#      which keeps scraping the live simulator so the history reaches the present;
#   2. tft-trainer train: pull the history from Prometheus, train, backtest, promote;
#   3. tft-forecaster --once: forecast every host and signal with the promoted model (the
#      shipped model if the candidate was not promoted);
#   4. print the predicted breaches next to the simulator's ground truth.
# Environment: HOSTS (20), DAYS (30), BUDGET (training minutes, 10), SEED (7), WORK (runs/pipeline).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
source scripts/ensure-env.sh
PY="$TFT_PYTHON"
HOSTS="${HOSTS:-20}" DAYS="${DAYS:-30}" BUDGET="${BUDGET:-10}" SEED="${SEED:-7}"
WORK="${WORK:-runs/pipeline}"
rm -rf "$WORK" && mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Incidents are scripted to breach 20-60 min after the anchor: put the anchor just after training.
ANCHOR=$(( ( $(date +%s) + (BUDGET + 4) * 60 ) / 60 * 60 ))
SIM=(--hosts "$HOSTS" --seed "$SEED" --scenario degrading --scenario.anchor "$ANCHOR" --job tft-simulator)

echo "== 1/4 backfill $DAYS days x $HOSTS hosts"
"$PY" -m exporter backfill "${SIM[@]}" --days "$DAYS" --out "$WORK/backfill" --log.level warn
EXPORTER_PORT=$(free_port) PROM_PORT=$(free_port)
"$PY" -m exporter "${SIM[@]}" --web.listen-address "127.0.0.1:$EXPORTER_PORT" --log.level warn &
PIDS+=($!)
mkdir -p "$WORK/prometheus/data" && cp -r "$WORK/backfill/blocks/." "$WORK/prometheus/data/"
cat > "$WORK/prometheus/prometheus.yml" <<YAML
global: {scrape_interval: 15s, evaluation_interval: 15s}
scrape_configs:
  - job_name: tft-simulator
    metrics_path: /probe
    http_sd_configs: [{url: "http://127.0.0.1:$EXPORTER_PORT/sd", refresh_interval: 30s}]
    relabel_configs:
      - {source_labels: [__address__], target_label: __param_target}
      - {source_labels: [__param_target], target_label: instance}
      - {target_label: __address__, replacement: "127.0.0.1:$EXPORTER_PORT"}
YAML
prometheus --config.file="$WORK/prometheus/prometheus.yml" --storage.tsdb.path="$WORK/prometheus/data" \
  --storage.tsdb.retention.time=400d --web.listen-address="127.0.0.1:$PROM_PORT" --log.level=warn \
  >"$WORK/prometheus/prometheus.log" 2>&1 &
PIDS+=($!)
"$PY" - "$PROM_PORT" <<'PYWAIT' || { echo "Prometheus did not start: see $WORK/prometheus/prometheus.log" >&2; exit 1; }
import sys, time, urllib.request
for _ in range(120):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/-/ready", timeout=1)
        sys.exit(0)
    except OSError:
        time.sleep(0.5)
sys.exit(1)
PYWAIT
echo "   Prometheus http://127.0.0.1:$PROM_PORT, simulator http://127.0.0.1:$EXPORTER_PORT"

echo "== 2/4 train (budget $BUDGET min)"
set +e
"$PY" -m trainer --log.level warn train --prometheus.url "http://127.0.0.1:$PROM_PORT" \
  --registry "$WORK/registry" --days "$DAYS" --time-budget "$BUDGET" --no-progress
TRAIN=$?
set -e
MODELS="$WORK/registry"
case $TRAIN in
  0) echo "   promoted a new model into $MODELS";;
  3|4) echo "   the candidate was not promoted (exit $TRAIN, see docs/TRAINING.md); forecasting with the shipped model"
       MODELS="$ROOT/models";;
  *) echo "training failed with exit $TRAIN" >&2; exit "$TRAIN";;
esac

echo "== 3/4 forecast"
sleep 20  # let Prometheus scrape the live simulator so that the newest input is fresh
"$PY" -m forecaster --log.level warn --once --prometheus.url "http://127.0.0.1:$PROM_PORT" \
  --model.dir "$MODELS" --output "$WORK/forecasts.json"

echo "== 4/4 predicted breaches vs the simulator's ground truth"
"$PY" -m exporter incidents "${SIM[@]}" --from "$(( $(date +%s) - 3600 ))" --to "$(( $(date +%s) + 8 * 3600 ))" \
  --out "$WORK/incidents.json" --log.level warn
"$PY" scripts/summarize_forecasts.py "$WORK/forecasts.json" "$WORK/incidents.json" --model.dir "$MODELS"
echo "== done: forecasts in $WORK/forecasts.json"
