#!/usr/bin/env bash
# usage: bash scripts/kgcoop/few_shot.sh DATA DATASET SHOTS MODEL   (seeds 1 2 3)
source "$(dirname "$0")/../common.sh"
usage_check 4 $# "bash scripts/kgcoop/few_shot.sh DATA DATASET SHOTS MODEL"
few_shot KgCoOp "$(per_dataset_config "$REPO/configs/trainers/KgCoOp/few_shot" "$2")" "$@"
