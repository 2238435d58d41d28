#!/usr/bin/env bash
# usage: bash scripts/tip_adapter/few_shot.sh DATA DATASET SHOTS MODEL   (seeds 1 2 3)
source "$(dirname "$0")/../common.sh"
usage_check 4 $# "bash scripts/tip_adapter/few_shot.sh DATA DATASET SHOTS MODEL"
few_shot TipAdapter "$REPO/configs/trainers/TipAdapter/few_shot.yaml" "$@"
