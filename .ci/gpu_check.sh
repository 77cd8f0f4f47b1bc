#!/usr/bin/env bash
# The CuPy checks for a GPU machine lent by the device tool (../shared/GPU.md): run from the
# repository root with .whl/ holding the array-api-compat wheel; results go to $OUT.
# Usage: bash .ci/gpu_check.sh [tests|bench|example|all]...
set -u
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi -L | tee "$OUT/gpu.txt"
python3 -m portnn info 2>&1 | tee "$OUT/info.log"
for stage in "${@:-all}"; do
  if [ "$stage" = tests ] || [ "$stage" = all ]; then
    PORTNN_BACKEND=cupy timeout "${TEST_TIMEOUT:-300}" python3 -m pytest -q -p no:cacheprovider \
      --maxfail=40 --junitxml="$OUT/cupy-junit.xml" ${PYTEST_ARGS:-tests} 2>&1 | tee "$OUT/cupy-tests.log" | tail -40
  fi
  if [ "$stage" = example ] || [ "$stage" = all ]; then
    for b in cupy numpy; do
      /usr/bin/time -f "$b: %e s wall for 2 epochs" python3 examples/ch19_fashion_mnist.py \
        --synthetic --epochs 2 --backend $b 2>&1 | tee "$OUT/ch19-$b.log" | tail -4
    done
  fi
  if [ "$stage" = bench ] || [ "$stage" = all ]; then
    timeout "${BENCH_TIMEOUT:-240}" python3 benchmarks/bench_train.py --backend cupy \
      ${BENCH_ARGS:-} --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log"
  fi
done
