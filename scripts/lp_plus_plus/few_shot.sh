#!/usr/bin/env bash
# usage: bash scripts/lp_plus_plus/few_shot.sh DATA DATASET SHOTS MODEL   (seeds 1 2 3)
source "$(dirname "$0")/../common.sh"
usage_check 4 $# "bash scripts/lp_plus_plus/few_shot.sh DATA DATASET SHOTS MODEL"
few_shot LPPlusPlus "$REPO/configs/trainers/LPPlusPlus/few_shot.yaml" "$@"
