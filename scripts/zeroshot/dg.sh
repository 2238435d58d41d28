#!/usr/bin/env bash
# usage: bash scripts/zeroshot/dg.sh DATA SOURCE SHOTS MODEL   (seeds 1 2 3; ENSEMBLE=1 for the LLM ensemble; TARGETS="..." to choose targets)
# Domain generalisation: the SOURCE few-shot run (reused when finished), then its model scored on the
# test split of each of SOURCE's DG targets without retraining (scripts/common.sh dg).
source "$(dirname "$0")/../common.sh"
usage_check 4 $# "bash scripts/zeroshot/dg.sh DATA SOURCE SHOTS MODEL"
METHOD=ZeroShot; if [ "${ENSEMBLE:-0}" = 1 ]; then METHOD=ZeroShotEnsemble; fi
dg "$METHOD" "$REPO/configs/trainers/ZeroShot/vit_b16.yaml" "$@"
