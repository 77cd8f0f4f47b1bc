#!/usr/bin/env bash
# The GPU checks for a machine lent by the device tool (../shared/GPU.md): run from the
# repository root with .whl/ holding the wheels the GPU machine lacks (array-api-compat,
# threadpoolctl; mpi4py and mpich for the distributed stage); results go to $OUT.
# Usage: bash .ci/gpu_check.sh [tests|kernels|torch|bench|example|all]...
#   tests    the whole suite on CuPy (portable kernels)
#   kernels  the fused CuPy kernels (PORTNN_CUPY_FUSED=1) against the portable reference
#   torch    the whole suite on torch tensors on the GPU (PORTNN_DEVICE=cuda)
#   bench    the full-size benchmark on CuPy (all rows), JSON with the GPU's name
#   example  chapter 19 on CuPy and on NumPy, two epochs each
set -u
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi -L | tee "$OUT/gpu.txt"
python3 -m portnn info 2>&1 | tee "$OUT/info.log"
suite() {  # name, then environment assignments for pytest
  local name=$1; shift
  env "$@" timeout "${TEST_TIMEOUT:-300}" python3 -m pytest -q -p no:cacheprovider \
    --maxfail=40 --junitxml="$OUT/$name-junit.xml" ${PYTEST_ARGS:-tests} 2>&1 \
    | tee "$OUT/$name-tests.log" | tail -40
}
for stage in "${@:-all}"; do
  if [ "$stage" = tests ] || [ "$stage" = all ]; then
    suite cupy PORTNN_BACKEND=cupy
  fi
  if [ "$stage" = kernels ] || [ "$stage" = all ]; then
    PYTEST_ARGS="tests/test_xp.py tests/test_optimizers.py tests/test_model.py" \
      suite cupy-fused PORTNN_BACKEND=cupy PORTNN_CUPY_FUSED=1
  fi
  if [ "$stage" = torch ] || [ "$stage" = all ]; then
    suite torch-cuda PORTNN_BACKEND=torch PORTNN_DEVICE=cuda
  fi
  if [ "$stage" = example ] || [ "$stage" = all ]; then
    for b in cupy numpy; do
      /usr/bin/time -f "$b: %e s wall for 2 epochs" python3 examples/ch19_fashion_mnist.py \
        --synthetic --epochs 2 --backend $b 2>&1 | tee "$OUT/ch19-$b.log" | tail -4
    done
  fi
  if [ "$stage" = bench ] || [ "$stage" = all ]; then
    timeout "${BENCH_TIMEOUT:-300}" python3 benchmarks/bench_train.py --backend cupy \
      ${BENCH_ARGS:-} --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log"
  fi
done
