#!/usr/bin/env bash
# Rebuild the pretraining corpus of docs/TRAINING.md, "Pretraining" (what models/pretrained was trained on).
#
#   scripts/build_corpus.sh OUT_DIR [DATASET.parquet ...]
#
# 15 simulated fleets (seeds 101-105 x healthy, degrading, critical; 20 hosts x 30 days around a fixed
# anchor; every other fleet with the scheduled jobs and the led incidents) through `tft-exporter history`,
# then `tft-trainer corpus` with the datasets' training parts. Writes OUT_DIR/fleets/*.parquet,
# OUT_DIR/corpus.parquet (+ .series.csv, .json) and OUT_DIR/fleets.parquet (the fleets as one history).
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: $0 OUT_DIR [DATASET.parquet ...]" >&2
  exit 2
fi
out=$1
shift
anchor=2025-01-06T00:00:00Z
mkdir -p "$out/fleets"
k=0
fleets=()
for seed in 101 102 103 104 105; do
  for scenario in healthy degrading critical; do
    k=$((k + 1))
    extras=()
    if [ $((k % 2)) -eq 0 ]; then extras=(--scheduled-jobs --led-incidents); fi
    file="$out/fleets/$scenario-s$seed.parquet"
    tft-exporter history --seed "$seed" --scenario "$scenario" --hosts 20 --days 30 --anchor "$anchor" \
      "${extras[@]}" --out "$file" --log.level warn
    fleets+=("$file")
  done
done
datasets=()
if [ $# -gt 0 ]; then datasets=(--dataset "$@"); fi
tft-trainer corpus --out "$out/corpus.parquet" --fleet-out "$out/fleets.parquet" --fleet "${fleets[@]}" "${datasets[@]}"
