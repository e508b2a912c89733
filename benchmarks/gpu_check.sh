#!/usr/bin/env bash
# The prepared GPU check: one command, about 8 minutes on an H100-class card, installs nothing.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]           # on the GPU machine (default OUT_DIR: gpu-check)
#   bash benchmarks/gpu_check.sh --small [OUT_DIR]   # the same steps shrunk to a smoke run (CPU, a minute; with the operator profile)
#
# Prints the card, then runs benchmarks/throughput.py: the seed and tiny presets, training and inference,
# fp32 and bf16, batch 64 and 256, torch.compile off and on (bf16 at batch 256), beside the seed-style implementation in
# the same run, with the input path's efficiency (the real uint8 loader against one batch already on the
# device), and the membership benchmark's scoring-speed part. Writes OUT_DIR/throughput.json and
# OUT_DIR/throughput.md; paste the table into docs/benchmarks.md with the card's name.
set -euo pipefail
small=0
out=gpu-check
for arg in "$@"; do
  case "$arg" in
    --small) small=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) out="$arg" ;;
  esac
done
here="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$out"
python -c "import torch; print('card:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU (CPU)', '| torch', torch.__version__)"
if [ "$small" = 1 ]; then
  args=(--presets tiny --batch-sizes 4 --steps 1 --tiny-steps 2 --precisions fp32 bf16 --compile off --images 3 --scoring toy)
  # the operator profile measures CPU time: only where the run is on the CPU
  if python -c "import sys, torch; sys.exit(torch.cuda.is_available())"; then args+=(--profile); fi
else
  args=(--presets seed tiny --batch-sizes 64 256 --steps 10 --tiny-steps 30 --precisions fp32 bf16 --compile both --scoring gpu)
fi
python "$here/throughput.py" "${args[@]}" --out "$out/throughput.json" --markdown "$out/throughput.md" | tee "$out/throughput.log"
echo "results: $out/throughput.json, table: $out/throughput.md"
