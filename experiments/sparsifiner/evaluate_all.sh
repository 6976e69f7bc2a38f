#!/usr/bin/env bash
# Evaluates the runs of run_digits.sh / run_shapes.sh over rho; writes <OUT>/<data>_*.json.
# Usage: bash experiments/sparsifiner/evaluate_all.sh digits|shapes [ROOT=/tmp/sparsifiner] [OUT=experiments/sparsifiner/results]
# ROOT_S2 (default ROOT): the folder of the stage-2 runs, as in run_*.sh; with it set, only the stage-2
# series are evaluated (dense and stage-1 results are those of ROOT).
# On shapes the baselines are evaluated at the target rho only. TARGET_ONLY=1 (the extra seeds, which
# only give gaps at the target rho): every series at the target rho only (the fine-tuned predictor model
# also at rho 1), no token-pruning row.
set -euo pipefail
DATA=$1
ROOT=${2:-/tmp/sparsifiner}
OUT=${3:-experiments/sparsifiner/results}
ROOT_S2=${ROOT_S2:-}
PY=${PYTHON:-python}
if [ "$DATA" = digits ]; then DENSE_CFG=configs/quickstart.py; RHO=0.2; RHOS=0.1,0.15,0.2,0.3,0.5,1.0; BASE_RHOS=$RHOS
else DENSE_CFG=configs/shapes_vit.py; RHO=0.25; RHOS=0.1,0.25,0.5,1.0; BASE_RHOS=$RHO; fi
[ "${TARGET_ONLY:-0}" = 1 ] && RHOS=$RHO,1.0 && BASE_RHOS=$RHO
CFG=configs/sparsifiner_$DATA.py:finetune
ev() { [ -f "$OUT/$1.json" ] || nice -n 5 "$PY" -m experiments.sparsifiner.evaluate --out="$OUT/$1.json" "${@:2}"; }
S2=${ROOT_S2:-$ROOT}
ev ${DATA}_finetuned_predictor --config=$CFG --workdir=$S2/${DATA}_s2_rho$RHO --rhos=$RHOS
ev ${DATA}_finetuned_random --config=$CFG --workdir=$S2/${DATA}_s2_random_rho$RHO --rhos=$BASE_RHOS --mask=random
[ -n "$ROOT_S2" ] && exit 0
ev ${DATA}_dense --config=$DENSE_CFG --workdir=$ROOT/${DATA}_dense
ev ${DATA}_stage1_predictor --config=$CFG --workdir=$ROOT/${DATA}_s1 --rhos=$BASE_RHOS
ev ${DATA}_stage1_random --config=$CFG --workdir=$ROOT/${DATA}_s1 --rhos=$BASE_RHOS --mask=random
[ "${TARGET_ONLY:-0}" = 1 ] || ev ${DATA}_finetuned_predictor_tokens0.5 --config=$CFG --workdir=$ROOT/${DATA}_s2_rho$RHO --rhos=$RHO --tokens=0.5
