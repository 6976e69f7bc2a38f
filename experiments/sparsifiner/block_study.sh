#!/usr/bin/env bash
# Block-coarsened vs token-level Sparsifiner masks on shapes at patch 2 (256 patches + class token), one seed:
# dense teacher -> stage 1 (predictor) -> two stage-2 fine-tunes at rho from the same stage-1 checkpoint, one with
# the token-level top-k mask (model.attention_block = 0) and one per block size in BLOCKS; then evaluate.py on each.
# Runs whose summary.json (evaluations: whose JSON) exists are skipped, so the script resumes.
# Usage: bash experiments/sparsifiner/block_study.sh ROOT OUT SEED
#   ROOT: run folders; OUT: JSON folder (results/block_patch2/seed$SEED).
# Environment: DENSE_STEPS (150), S1_STEPS (100), S2_STEPS (40), WARMUP (10 dense, 5 stages 1 and 2 unless set),
# RHO (0.25), BLOCKS ("16"), RUN_PREFIX (prepended to every python command, e.g. "taskset -c 1 nice -n 5").
set -euo pipefail
ROOT=${1:?usage: block_study.sh ROOT OUT SEED}
OUT=${2:?usage: block_study.sh ROOT OUT SEED}
SEED=${3:?usage: block_study.sh ROOT OUT SEED}
PY=${PYTHON:-python}
RHO=${RHO:-0.25}
DENSE_STEPS=${DENSE_STEPS:-150}; S1_STEPS=${S1_STEPS:-100}; S2_STEPS=${S2_STEPS:-40}
BLOCKS=${BLOCKS:-16}
PREFIX=${RUN_PREFIX:-}
COMMON="--config.seed=$SEED --config.log.progress_bar=False"
train() { [ -f "$2/summary.json" ] || $PREFIX "$PY" -m effjax.main --config="$1" --workdir="$2" "${@:3}" $COMMON; }
ev() { [ -f "$OUT/$1.json" ] || $PREFIX "$PY" -m experiments.sparsifiner.evaluate --out="$OUT/$1.json" "${@:2}"; }
S2=configs/sparsifiner_shapes.py:finetune,rho=$RHO,patch=2
train configs/shapes_vit.py:patch=2 "$ROOT/dense" --config.train.num_steps="$DENSE_STEPS" \
    --config.train.warmup_steps="${WARMUP:-10}"
train configs/sparsifiner_shapes.py:predictor,patch=2 "$ROOT/s1" --config.train.init_from="$ROOT/dense" \
    --config.train.num_steps="$S1_STEPS" --config.train.warmup_steps="${WARMUP:-5}"
for B in 0 $BLOCKS; do
  train "$S2,block=$B" "$ROOT/s2_block$B" --config.train.init_from="$ROOT/s1" \
      --config.train.num_steps="$S2_STEPS" --config.train.warmup_steps="${WARMUP:-5}"
done
ev dense --config=configs/shapes_vit.py:patch=2 --workdir="$ROOT/dense"
for B in 0 $BLOCKS; do
  ev "finetuned_block$B" --config="$S2,block=$B" --workdir="$ROOT/s2_block$B" --rhos="$RHO,1.0"
done
