#!/usr/bin/env bash
# usage: bash scripts/zeroshot/few_shot.sh DATA DATASET SHOTS MODEL   (seeds 1 2 3; ENSEMBLE=1 for the LLM ensemble)
# Evaluates the frozen model on the test split; nothing is trained, so SHOTS and the seed only
# place the result beside the K-shot runs of the other methods (every seed gives the same number).
source "$(dirname "$0")/../common.sh"
METHOD=ZeroShot; if [ "${ENSEMBLE:-0}" = 1 ]; then METHOD=ZeroShotEnsemble; fi
usage_check 4 $# "bash scripts/zeroshot/few_shot.sh DATA DATASET SHOTS MODEL"
few_shot "$METHOD" "$REPO/configs/trainers/ZeroShot/vit_b16.yaml" "$@"
