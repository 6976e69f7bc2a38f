#!/usr/bin/env bash
# Shapes evidence: dense -> stage 1 (predictor) -> stage 2 (fine-tune at rho) with predictor and random masks.
# Usage: bash experiments/sparsifiner/run_shapes.sh [ROOT=/tmp/sparsifiner] [RHO=0.25]
set -euo pipefail
ROOT=${1:-/tmp/sparsifiner}
RHO=${2:-0.25}
PY=${PYTHON:-python}
run() { nice -n 5 "$PY" -m effjax.main "$@"; }
[ -f "$ROOT/shapes_dense/summary.json" ] || run --config=configs/shapes_vit.py --workdir="$ROOT/shapes_dense" --config.train.num_steps=600
[ -f "$ROOT/shapes_s1/summary.json" ] || run --config=configs/sparsifiner_shapes.py:predictor \
    --workdir="$ROOT/shapes_s1" --config.train.init_from="$ROOT/shapes_dense"
[ -f "$ROOT/shapes_s2_rho$RHO/summary.json" ] || run --config=configs/sparsifiner_shapes.py:finetune,rho=$RHO \
    --workdir="$ROOT/shapes_s2_rho$RHO" --config.train.init_from="$ROOT/shapes_s1"
[ -f "$ROOT/shapes_s2_random_rho$RHO/summary.json" ] || run --config=configs/sparsifiner_shapes.py:finetune,rho=$RHO,random \
    --workdir="$ROOT/shapes_s2_random_rho$RHO" --config.train.init_from="$ROOT/shapes_s1"
