#!/usr/bin/env bash
# usage: bash scripts/ogkd/base2new.sh DATA DATASET MODEL   (seeds 1 2 3; 16 shots)
source "$(dirname "$0")/../common.sh"
usage_check 3 $# "bash scripts/ogkd/base2new.sh DATA DATASET MODEL"
base2new OGKD "$(per_dataset_config "$REPO/configs/trainers/OGKD/base_to_novel" "$2")" "$@" 50
