#!/usr/bin/env bash
# The GPU check of issues 12 and 13 in one command (at most 2 + 7 minutes: the timeouts below), from the project root of a GPU machine:
#   bash benchmarks/gpu_check.sh PATH/s4d.py [OUT_DIR]        (OUT_DIR default: gpu-check)
# PATH/s4d.py is the reference (state-spaces/s4 models/s4/s4d.py, see benchmarks/README.md; never commit it).
# Runs the GPU-only tests (no host-device sync in a training step; the Triton kernel vs PyTorch; STU and AR-STU
# vs float64), then
# benchmarks/gpu_check.py: numerics vs float64, the layer table vs the reference, the LRA S4D recipes' steps,
# the LRA STU / AR-STU recipes' steps and peak memory, the STU / AR-STU block table.
# Writes OUT_DIR/gpu_check.json, OUT_DIR/gpu_check.md and OUT_DIR/tests.txt.
# An offline machine without pydantic/datasets/soundfile gets them from .whl/ (made by ../shared/gpu/wheels.sh).
# Python: $PYTHON if set, else the virtualenv of `make install` ($VENV, default .venv), else python3. Before any
# section runs, a preflight imports the reference as the layer table will (einops, torch.nn.functional, ...:
# `make install` installs the bench extra) and stops with the missing module named.
set -euo pipefail
cd "$(dirname "$0")/.."
reference=${1:?usage: bash benchmarks/gpu_check.sh PATH/s4d.py [OUT_DIR]}
out=${2:-gpu-check}
venv=${VENV:-.venv}
if [ -n "${PYTHON:-}" ]; then PY=$PYTHON; elif [ -x "$venv/bin/python" ]; then PY=$venv/bin/python; else PY=python3; fi
echo "gpu_check: $PY ($("$PY" -c 'import sys; print(sys.prefix)'))"
mkdir -p "$out"
if ! "$PY" -c "import pydantic, datasets, soundfile" 2>/dev/null; then
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "gpu_check: pydantic/datasets/soundfile are missing and .whl/ has no wheels; see benchmarks/README.md" >&2
    exit 2
  fi
  "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/ssmbench-site .whl/*.whl
  export PYTHONPATH=/tmp/ssmbench-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
"$PY" - "$reference" <<'EOF'
import sys
from ssmbench.bench import load_reference
from ssmbench.errors import SSMBenchError
try:
    load_reference(sys.argv[1])
except SSMBenchError as e:
    sys.exit(f"gpu_check: preflight: {e}; `make install` installs the bench extra, or `pip install einops`")
EOF
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: no CUDA device')"
# Tests first, but a failure does not stop the figures: both end up in OUT_DIR.
tests_rc=0
timeout 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_gpu_train.py tests/test_gpu_stu.py tests/test_vandermonde_triton.py \
  > "$out/tests.txt" 2>&1 || tests_rc=$?
tail -n 3 "$out/tests.txt"
timeout 420 "$PY" benchmarks/gpu_check.py --reference "$reference" --out "$out"
exit "$tests_rc"
