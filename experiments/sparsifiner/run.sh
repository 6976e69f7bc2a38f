#!/usr/bin/env bash
# Sparsifiner evidence for one dataset: dense -> stage 1 (predictor) -> stage 2 (fine-tune at rho) with
# predictor and random masks. Runs whose summary.json exists are skipped, so the script resumes.
# Usage: bash experiments/sparsifiner/run.sh DATASET(digits|shapes) [ROOT=/tmp/sparsifiner] [RHO] [SEED=0]
# RHO defaults to 0.2 (digits) / 0.25 (shapes). SEED is passed as --config.seed to every run (0 is the configs'
# default). Environment overrides of the configs' num_steps (unset: the config's own): DENSE_STEPS, S1_STEPS,
# S2_STEPS. S2_ARGS: extra flags for both stage-2 runs (a recipe variant; give it its own ROOT_S2, the folder the
# stage-2 runs go to, default ROOT).
set -euo pipefail
DATA=${1:?usage: run.sh digits|shapes [ROOT] [RHO] [SEED]}
case "$DATA" in
  digits) DENSE_CONFIG=configs/quickstart.py; DEFAULT_RHO=0.2 ;;
  shapes) DENSE_CONFIG=configs/shapes_vit.py; DEFAULT_RHO=0.25 ;;
  *) echo "run.sh: DATASET=$DATA: allowed digits, shapes" >&2; exit 2 ;;
esac
ROOT=${2:-/tmp/sparsifiner}
RHO=${3:-$DEFAULT_RHO}
SEED=${4:-0}
ROOT_S2=${ROOT_S2:-$ROOT}
PY=${PYTHON:-python}
run() { nice -n 5 "$PY" -m effjax.main "$@" --config.seed="$SEED"; }
steps() { [ -n "${1:-}" ] && echo "--config.train.num_steps=$1" || true; }
[ -f "$ROOT/${DATA}_dense/summary.json" ] || run --config=$DENSE_CONFIG --workdir="$ROOT/${DATA}_dense" \
    $(steps "${DENSE_STEPS:-}")
[ -f "$ROOT/${DATA}_s1/summary.json" ] || run --config=configs/sparsifiner_$DATA.py:predictor \
    --workdir="$ROOT/${DATA}_s1" --config.train.init_from="$ROOT/${DATA}_dense" $(steps "${S1_STEPS:-}")
for MASK in "" ",random"; do
  NAME=${DATA}_s2${MASK:+_random}_rho$RHO
  [ -f "$ROOT_S2/$NAME/summary.json" ] || run --config=configs/sparsifiner_$DATA.py:finetune,rho=$RHO$MASK \
      --workdir="$ROOT_S2/$NAME" --config.train.init_from="$ROOT/${DATA}_s1" $(steps "${S2_STEPS:-}") ${S2_ARGS:-}
done
