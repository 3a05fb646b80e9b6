#!/usr/bin/env bash
# Runs every benchmark and prints every table, with the machine they ran on (docs/BENCHMARKS.md
# holds the published results and the command behind each table).
#
#   ./benchmarks/run_all.sh                  about an hour on 2 cores (25 minutes of it the accuracy backtest)
#   QUICK=1 ./benchmarks/run_all.sh          smaller sizes, no accuracy backtest: about 10 minutes
#   MODEL_DIR=DIR ./benchmarks/run_all.sh    evaluate this model instead of the shipped models/
#   SKIP_ACCURACY=1 ./benchmarks/run_all.sh  leave out the accuracy backtest
#
# Needs prometheus and promtool on PATH (backfill, demo). The accuracy backtest runs when the
# benchmark dataset ../shared/bench/data/nab_infra_5min.parquet exists.
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
QUICK="${QUICK:-0}"
MODEL_ARGS=()
[ -n "${MODEL_DIR:-}" ] && MODEL_ARGS=(--model.dir "$MODEL_DIR")
FAILED=()

run() {  # run TITLE COMMAND...: a heading, the command, its tables
  local title=$1
  shift
  printf '\n## %s\n\n$ %s\n\n' "$title" "$*"
  local started=$SECONDS rc=0
  "$@" || rc=$?
  if [ "$rc" -ne 0 ]; then
    FAILED+=("$title")
    echo "(failed: exit status $rc)"
  fi
  echo "($((SECONDS - started)) s)"
}

cpu=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ *//')
echo "# tft-monitor benchmarks, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo
echo "machine: $(getconf _NPROCESSORS_ONLN) cores (${cpu:-unknown cpu}), $(awk '/MemTotal/ {printf "%.0f GB", $2/1048576}' /proc/meminfo) RAM;" \
     "$(python3 --version); torch $(python3 -c 'import torch; print(torch.__version__)' 2>/dev/null);" \
     "$(prometheus --version 2>&1 | head -1)"

if [ "$QUICK" = 1 ]; then
  run "Early warning on simulated fleets" python3 benchmarks/early_warning.py "${MODEL_ARGS[@]}" --hosts 8 --days 3
  run "Forecaster cycle by fleet size" python3 benchmarks/forecaster_cycle.py --hosts 100 1000 "${MODEL_ARGS[@]}"
  run "Exporter scrape time" python3 benchmarks/exporter_scrape.py --requests 100
  run "Training throughput" python3 benchmarks/training_throughput.py --batches 6 --skip 1 --repeats 1
  run "Backfill speed" python3 benchmarks/backfill_speed.py --hosts 20
  run "Demo start-up and lead times" python3 benchmarks/demo_startup.py --for 2m "${MODEL_ARGS[@]}"
else
  run "Early warning on simulated fleets" python3 benchmarks/early_warning.py "${MODEL_ARGS[@]}"
  run "Forecaster cycle by fleet size" python3 benchmarks/forecaster_cycle.py "${MODEL_ARGS[@]}"
  run "Exporter scrape time" python3 benchmarks/exporter_scrape.py
  run "Training throughput" python3 benchmarks/training_throughput.py
  run "Backfill speed" python3 benchmarks/backfill_speed.py --hosts 20 200
  run "Demo start-up and lead times" python3 benchmarks/demo_startup.py --for 10m "${MODEL_ARGS[@]}"
  DATA=../shared/bench/data/nab_infra_5min.parquet
  if [ "${SKIP_ACCURACY:-0}" != 1 ] && [ -f "$DATA" ]; then
    OUT=$(mktemp -d)
    run "Accuracy: backtest on the benchmark dataset, scored next to the baselines" \
      python3 -m trainer backtest --data "$DATA" --out "$OUT/forecasts.parquet" --score ../shared/bench/score.py \
        --save-model "$OUT/model"
    run "How fast the benchmark-trained model follows a level shift" \
      python3 benchmarks/level_shift_response.py "$OUT/model"
    run "The p50 at short horizons against simple present levels" \
      python3 benchmarks/short_horizon_levels.py "$DATA" "$OUT/forecasts.parquet"
  fi
fi

if [ ${#FAILED[@]} -gt 0 ]; then
  printf '\nfailed: %s\n' "${FAILED[*]}"
  exit 1
fi
