#!/usr/bin/env bash
# Stage-2 recipe sweep on digits, one seed, predictor mask only (selection on val; see README "Stage-2 recipe
# (digits)"). Each variant fine-tunes the stage-1 run ROOT/digits_s1 at rho 0.2 into SWEEP/<name>/digits_s2_rho0.2
# and is evaluated at rho 0.2 and 1 into OUT/<name>/digits_finetuned_predictor.json. Runs / JSONs that exist are
# skipped, so the script resumes. The earlier round's stage-2 run ROOT/digits_s2_rho0.2 (made by run.sh with the
# defaults of that time) is evaluated the same way into OUT/default/.
# Usage: bash experiments/sparsifiner/sweep_digits.sh ROOT SWEEP [OUT=experiments/sparsifiner/results/sweep] [SEED=0]
set -euo pipefail
ROOT=${1:?usage: sweep_digits.sh ROOT SWEEP [OUT] [SEED]}
SWEEP=${2:?usage: sweep_digits.sh ROOT SWEEP [OUT] [SEED]}
OUT=${3:-experiments/sparsifiner/results/sweep}
SEED=${4:-0}
PY=${PYTHON:-python}
CFG=configs/sparsifiner_digits.py:finetune,rho=0.2
# learning rate, steps, distillation weight (logits and tokens alike), all explicit so that the sweep does not
# depend on the config's defaults (the paper's 0.5 / 0.5 at the time of the sweep, lr 5e-4, 600 steps)
recipe() { echo "--config.train.learning_rate=$1 --config.train.num_steps=$2" \
    "--config.sparsifiner.distill_logits_weight=$3 --config.sparsifiner.distill_tokens_weight=$3"; }
VARIANTS=(  # name | flags; "default" below is the earlier round's run (lr 5e-4, 600 steps, 0.5 / 0.5)
  "lr1e-4_200|$(recipe 1e-4 200 0.5)"
  "lr1e-4_600|$(recipe 1e-4 600 0.5)"
  "lr2e-4_200|$(recipe 2e-4 200 0.5)"
  "lr2e-4_600|$(recipe 2e-4 600 0.5)"
  "kd2_lr5e-4_600|$(recipe 5e-4 600 2.0)"
)
for entry in "${VARIANTS[@]}"; do
  NAME=${entry%%|*}; FLAGS=${entry#*|}
  RUN=$SWEEP/$NAME/digits_s2_rho0.2
  [ -f "$RUN/summary.json" ] || nice -n 5 "$PY" -m effjax.main --config=$CFG --workdir="$RUN" \
      --config.train.init_from="$ROOT/digits_s1" --config.seed="$SEED" --config.log.progress_bar=False $FLAGS
  [ -f "$OUT/$NAME/digits_finetuned_predictor.json" ] || nice -n 5 "$PY" -m experiments.sparsifiner.evaluate \
      --config=$CFG --workdir="$RUN" --rhos=0.2,1.0 --out="$OUT/$NAME/digits_finetuned_predictor.json"
done
[ -f "$OUT/default/digits_finetuned_predictor.json" ] || nice -n 5 "$PY" -m experiments.sparsifiner.evaluate \
    --config=$CFG --workdir="$ROOT/digits_s2_rho0.2" --rhos=0.2,1.0 --out="$OUT/default/digits_finetuned_predictor.json"
