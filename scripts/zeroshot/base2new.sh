#!/usr/bin/env bash
# usage: bash scripts/zeroshot/base2new.sh DATA DATASET MODEL   (seeds 1 2 3; ENSEMBLE=1 for the LLM ensemble)
# Evaluates the frozen model on the base classes (train_base/) and on the novel classes (test_new/).
source "$(dirname "$0")/../common.sh"
METHOD=ZeroShot; if [ "${ENSEMBLE:-0}" = 1 ]; then METHOD=ZeroShotEnsemble; fi
usage_check 3 $# "bash scripts/zeroshot/base2new.sh DATA DATASET MODEL"
base2new "$METHOD" "$REPO/configs/trainers/ZeroShot/vit_b16.yaml" "$@" 0
