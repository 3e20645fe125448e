#!/usr/bin/env bash
# The GPU check (experiments/benchmarks/gpu_check.py): the device-independent tests on the
# default device, batch fits/s at B = 10^2 ... 10^5 and the KL kernels against the
# memory-bandwidth floor, written to one JSON. Under 8 minutes on one GPU.
#
#   experiments/benchmarks/gpu_check.sh [OUT.json]            # on a GPU host
#   experiments/benchmarks/gpu_check.sh OUT.json --small      # the same steps at CPU sizes
#
# Set up first: python3 -m venv .venv && .venv/bin/pip install -e '.[cuda,test]'
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-gpu_check.json}"
shift || true
python="${PYTHON:-.venv/bin/python}"
exec timeout 480 "$python" experiments/benchmarks/gpu_check.py --out "$out" "$@"
