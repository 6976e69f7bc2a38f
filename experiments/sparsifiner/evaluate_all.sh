#!/usr/bin/env bash
# Evaluates the runs of run_digits.sh / run_shapes.sh over rho; writes results/*.json.
# Usage: bash experiments/sparsifiner/evaluate_all.sh digits|shapes [ROOT=/tmp/sparsifiner]
# On shapes the baselines are evaluated at the target rho only (evaluation is slow on the shared CPU).
set -euo pipefail
DATA=$1
ROOT=${2:-/tmp/sparsifiner}
PY=${PYTHON:-python}
OUT=experiments/sparsifiner/results
if [ "$DATA" = digits ]; then DENSE_CFG=configs/quickstart.py; RHO=0.2; RHOS=0.1,0.15,0.2,0.3,0.5,1.0; BASE_RHOS=$RHOS
else DENSE_CFG=configs/shapes_vit.py; RHO=0.25; RHOS=0.1,0.25,0.5,1.0; BASE_RHOS=$RHO; fi
CFG=configs/sparsifiner_$DATA.py:finetune
ev() { [ -f "$OUT/$1.json" ] || nice -n 5 "$PY" -m experiments.sparsifiner.evaluate --out="$OUT/$1.json" "${@:2}"; }
ev ${DATA}_dense --config=$DENSE_CFG --workdir=$ROOT/${DATA}_dense
ev ${DATA}_finetuned_predictor --config=$CFG --workdir=$ROOT/${DATA}_s2_rho$RHO --rhos=$RHOS
ev ${DATA}_finetuned_random --config=$CFG --workdir=$ROOT/${DATA}_s2_random_rho$RHO --rhos=$BASE_RHOS --mask=random
ev ${DATA}_stage1_predictor --config=$CFG --workdir=$ROOT/${DATA}_s1 --rhos=$BASE_RHOS
ev ${DATA}_stage1_random --config=$CFG --workdir=$ROOT/${DATA}_s1 --rhos=$BASE_RHOS --mask=random
ev ${DATA}_finetuned_predictor_tokens0.5 --config=$CFG --workdir=$ROOT/${DATA}_s2_rho$RHO --rhos=$RHO --tokens=0.5
