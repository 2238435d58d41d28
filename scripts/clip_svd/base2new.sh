#!/usr/bin/env bash
# usage: bash scripts/clip_svd/base2new.sh DATA DATASET MODEL   (seeds 1 2 3; 16 shots)
source "$(dirname "$0")/../common.sh"
usage_check 3 $# "bash scripts/clip_svd/base2new.sh DATA DATASET MODEL"
# Epochs differ per dataset (configs/trainers/CLIPSVD/base_to_novel/): test the latest checkpoint.
base2new CLIPSVD "$(per_dataset_config "$REPO/configs/trainers/CLIPSVD/base_to_novel" "$2")" "$@" ""
