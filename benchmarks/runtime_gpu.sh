#!/usr/bin/env bash
# GPU figures for the runtime (run from the repo root on a CUDA machine; results under ${OUT:-/tmp/gpu-out}).
# Optional wheels in .whl/ (gliclass, opentelemetry-api, transformers, pytest-asyncio) are installed first;
# .gpuassets/tokenizer holds BERT WordPiece tokenizer files (all-MiniLM-L6-v2's).
set -uo pipefail
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
  python3 -c "import transformers" 2>/dev/null || rm -rf /tmp/site/transformers*  # fall back to the image's
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1
quiet() { grep -v -e 'Loading weights' -e 'Writing model' -e '^\[transformers\]'; }
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, transformers, gliclass; print('torch', torch.__version__, 'transformers', transformers.__version__)"
} 2>&1 | tee "$OUT/env.txt"
python3 -m pytest --noconftest -q -p no:cacheprovider -o addopts="" tests/integration/test_runtime_gpu.py 2>&1 \
  | tail -25 | tee "$OUT/gpu_tests.txt"
python3 benchmarks/runtime_gpu.py --tokenizer .gpuassets/tokenizer --out "$OUT/gpu_bench.json" "$@" 2>&1 | quiet \
  | tee "$OUT/gpu_bench.txt"
python3 -c "import argparse, sys; from server.app.commands import bench; p = argparse.ArgumentParser(); \
bench.add_arguments(p); sys.exit(bench.run(p.parse_args(sys.argv[1:])))" \
  --model /tmp/gliclass-gpu-bench/gliclass --device cuda:0 --dtype bfloat16 --texts 4096 --labels 10 \
  --max-batch-size 128 --max-batch-tokens 32768 --json 2>&1 | quiet | tee "$OUT/cli_bench_gpu.txt"
# Mixed traffic with two replicas on the one GPU (each on its own CUDA stream; one kept for interactive work).
python3 -c "import argparse, sys; from server.app.commands import bench; p = argparse.ArgumentParser(); \
bench.add_arguments(p); sys.exit(bench.run(p.parse_args(sys.argv[1:])))" \
  --model /tmp/gliclass-gpu-bench/gliclass --device cuda:0 --dtype bfloat16 --labels 10 --scenario latency \
  --replicas-per-device 2 --max-batch-size 128 --max-batch-tokens 32768 --json 2>&1 | quiet \
  | tee "$OUT/cli_bench_gpu_2replicas.txt"
