#!/usr/bin/env bash
# The GPU checks for a machine lent by the device tool (../shared/GPU.md): run from the
# repository root with .whl/ holding the wheels the GPU machine lacks; results go to $OUT.
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --platform manylinux_2_28_x86_64 -d .whl \
#       array-api-compat threadpoolctl pytest-xdist execnet mpi4py mpich
#   run(carry=[".whl"], timeout_s=540, command="bash .ci/gpu_check.sh tests kernels torch")
#   run(carry=[".whl"], timeout_s=540, command="bash .ci/gpu_check.sh bench example distributed")
#
# Usage: bash .ci/gpu_check.sh [tests|kernels|torch|distributed|bench|example|all]...
#   tests        the whole suite on CuPy
#   kernels      the CuPy kernels against the portable reference (test_xp, optimizers, model)
#                with every fused path on (PORTNN_CUPY_FUSED=1)
#   torch        the whole suite on torch tensors on the GPU (PORTNN_DEVICE=cuda)
#   distributed  the multi-process tests on CuPy: NCCL with one rank, two MPI ranks sharing
#                the one GPU through host buffers
#   bench        the full-size benchmark on CuPy (all rows and contestants), JSON with the
#                GPU's name
#   example      chapter 19 on CuPy and on NumPy, two epochs each
# With pytest-xdist in .whl the suites run on $WORKERS processes (default 8) sharing the GPU.
# Every test's result streams into $OUT/<suite>-tests.log, so a stage cut off by its time
# limit still names what failed before it.
set -u
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 PATH=/tmp/site/bin:$PATH
nvidia-smi -L | tee "$OUT/gpu.txt"
python3 -m portnn info 2>&1 | tee "$OUT/info.log"

suite() {  # name, then environment assignments for pytest
  local name=$1; shift
  local log="$OUT/$name-tests.log" workers=()
  python3 -c "import xdist" 2>/dev/null && workers=(-n "${WORKERS:-8}")
  local start=$SECONDS
  env "$@" timeout "${TEST_TIMEOUT:-300}" python3 -m pytest -v --tb=short \
    -p no:cacheprovider "${workers[@]}" --maxfail=40 --junitxml="$OUT/$name-junit.xml" \
    ${PYTEST_ARGS:-tests} > "$log" 2>&1
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - start)) s$([ $rc = 124 ] && echo ' (time limit)')"
  if grep -qE "^(FAILED|ERROR) " "$log"; then  # pytest's summary, when it got that far
    grep -E "^(FAILED|ERROR) " "$log" | head -40
  else  # cut off: the failures streamed so far
    grep -E " (FAILED|ERROR)( |$)" "$log" | head -40
  fi
  tail -2 "$log"
}

for stage in "${@:-all}"; do
  if [ "$stage" = tests ] || [ "$stage" = all ]; then
    suite cupy PORTNN_BACKEND=cupy
  fi
  if [ "$stage" = kernels ] || [ "$stage" = all ]; then
    PYTEST_ARGS="tests/test_xp.py tests/test_activations.py tests/test_losses.py
      tests/test_optimizers.py tests/test_model.py tests/test_train_loop.py" \
      suite cupy-fused PORTNN_BACKEND=cupy PORTNN_CUPY_FUSED=1
  fi
  if [ "$stage" = torch ] || [ "$stage" = all ]; then
    suite torch-cuda PORTNN_BACKEND=torch PORTNN_DEVICE=cuda
  fi
  if [ "$stage" = distributed ] || [ "$stage" = all ]; then
    PYTEST_ARGS=tests/test_distributed.py WORKERS=2 suite distributed PORTNN_BACKEND=cupy
  fi
  if [ "$stage" = example ] || [ "$stage" = all ]; then
    for b in cupy numpy; do
      /usr/bin/time -f "$b: %e s wall for 2 epochs" python3 examples/ch19_fashion_mnist.py \
        --synthetic --epochs 2 --backend $b 2>&1 | tee "$OUT/ch19-$b.log" | tail -4
    done
  fi
  if [ "$stage" = bench ] || [ "$stage" = all ]; then
    timeout "${BENCH_TIMEOUT:-360}" python3 benchmarks/bench_train.py --backend cupy \
      ${BENCH_ARGS:-} --json "$OUT/bench.json" 2>&1 | tee "$OUT/bench.log" | tail -30
  fi
done
