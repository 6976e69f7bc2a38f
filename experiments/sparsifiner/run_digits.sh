#!/usr/bin/env bash
# Digits evidence: dense -> stage 1 (predictor) -> stage 2 (fine-tune at rho) with predictor and random masks.
# Usage: bash experiments/sparsifiner/run_digits.sh [ROOT=/tmp/sparsifiner] [RHO=0.2]
set -euo pipefail
ROOT=${1:-/tmp/sparsifiner}
RHO=${2:-0.2}
PY=${PYTHON:-python}
run() { nice -n 5 "$PY" -m effjax.main "$@"; }
[ -f "$ROOT/digits_dense/summary.json" ] || run --config=configs/quickstart.py --workdir="$ROOT/digits_dense"
[ -f "$ROOT/digits_s1/summary.json" ] || run --config=configs/sparsifiner_digits.py:predictor \
    --workdir="$ROOT/digits_s1" --config.train.init_from="$ROOT/digits_dense"
[ -f "$ROOT/digits_s2_rho$RHO/summary.json" ] || run --config=configs/sparsifiner_digits.py:finetune,rho=$RHO \
    --workdir="$ROOT/digits_s2_rho$RHO" --config.train.init_from="$ROOT/digits_s1"
[ -f "$ROOT/digits_s2_random_rho$RHO/summary.json" ] || run --config=configs/sparsifiner_digits.py:finetune,rho=$RHO,random \
    --workdir="$ROOT/digits_s2_random_rho$RHO" --config.train.init_from="$ROOT/digits_s1"
