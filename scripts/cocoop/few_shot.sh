#!/usr/bin/env bash
# usage: bash scripts/cocoop/few_shot.sh DATA DATASET SHOTS MODEL   (seeds 1 2 3)
source "$(dirname "$0")/../common.sh"
usage_check 4 $# "bash scripts/cocoop/few_shot.sh DATA DATASET SHOTS MODEL"
few_shot CoCoOp "$REPO/configs/trainers/CoCoOp/vit_b16.yaml" "$@"
