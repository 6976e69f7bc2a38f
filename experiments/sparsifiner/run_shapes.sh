#!/usr/bin/env bash
# Shapes evidence (see run.sh). Usage: bash experiments/sparsifiner/run_shapes.sh [ROOT=/tmp/sparsifiner] [RHO=0.25] [SEED=0]
exec bash "$(dirname "$0")/run.sh" shapes "$@"
