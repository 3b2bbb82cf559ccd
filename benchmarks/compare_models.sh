#!/usr/bin/env bash
# The product's question, answered with figures: scratch CNN (default, and with augmentation)
# against YAMNet fine-tuned and YAMNet frozen embeddings + head, on the same speaker-disjoint 5
# folds (same seed), then the exported models' speed. Long (about two hours on 2 cores): run
# it, don't test it.
#
#   bash benchmarks/compare_models.sh [DATA_DIR] [YAMNET_WEIGHTS]
set -euo pipefail
data=${1:-../shared/data/audiomnist-az-dev}
weights=${2:-../shared/models/yamnet/yamnet.tflite}
out=${BENCHMARK_OUTPUT:-benchmarks/results}
mkdir -p "$out"

run() {
  local name=$1; shift
  local started=$SECONDS
  python -m speakergender.train --data-dir "$data" --folds 5 --seed 0 --quiet \
    --name "$name" --output "$out/$name" --logdir "$out/runs/$name" "$@"
  echo "$name: $((SECONDS - started)) s in all"
}

run scratch --model scratch
run scratch-augmented --model scratch --gain-db 6 --noise-snr-db 25 --spec-augment
run yamnet --model yamnet --backbone-handle "$weights"
run yamnet-frozen --model yamnet-frozen --backbone-handle "$weights"

python -m speakergender.evaluate --cross-validation --models-dir "$out" \
  scratch scratch-augmented yamnet yamnet-frozen --csv "$out/comparison.csv" --plots "$out/figures"
python - "$out" <<'PY'
import json, sys
from pathlib import Path
for name in ("scratch", "scratch-augmented", "yamnet", "yamnet-frozen"):
    result = json.loads((Path(sys.argv[1]) / name / "metrics.json").read_text())
    seconds = [fold["train_seconds"] for fold in result["folds"]]
    print(f"{name}: training per fold {min(seconds):.0f}-{max(seconds):.0f} s "
          f"(mean {sum(seconds) / len(seconds):.0f} s)")
PY
python benchmarks/serving_throughput.py "$out/scratch" "$out/yamnet"
