#!/usr/bin/env bash
# usage: bash scripts/clip_svd/few_shot.sh DATA DATASET SHOTS MODEL   (seeds 1 2 3)
source "$(dirname "$0")/../common.sh"
usage_check 4 $# "bash scripts/clip_svd/few_shot.sh DATA DATASET SHOTS MODEL"
few_shot CLIPSVD "$(per_dataset_config "$REPO/configs/trainers/CLIPSVD/few_shot" "$2")" "$@"
