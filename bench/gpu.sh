#!/usr/bin/env bash
# Throughput and precision on a GPU machine, in under 5 minutes. Prepare here with
# `python -m bench gpu-pack`, then run `bash bench/gpu.sh` from the repository root there
# with `.gpu/` carried along. Figures go to stdout and to $OUT (or ./out) as gpu.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/.gpu/site:$PWD" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export EMBEDQ_SHARED_DATA="$PWD/.gpu/data" TOKENIZERS_PARALLELISM=false
out="${OUT:-out}"; mkdir -p "$out"
py=$(command -v python3)
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  # The packed weights are fp16: fp32 here is the fp16-rounded model cast up, for every row.
  timeout 150 "$py" -m bench precision --device cuda --every --docs 5183 --quality
  timeout 100 "$py" -m bench precision --device cpu --docs 200
} 2>&1 | tee "$out/gpu.txt"
