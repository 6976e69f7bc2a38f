#!/usr/bin/env bash
# Digits evidence (see run.sh). Usage: bash experiments/sparsifiner/run_digits.sh [ROOT=/tmp/sparsifiner] [RHO=0.2] [SEED=0]
exec bash "$(dirname "$0")/run.sh" digits "$@"
