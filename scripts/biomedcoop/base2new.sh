#!/usr/bin/env bash
# usage: bash scripts/biomedcoop/base2new.sh DATA DATASET MODEL   (seeds 1 2 3; 16 shots)
source "$(dirname "$0")/../common.sh"
usage_check 3 $# "bash scripts/biomedcoop/base2new.sh DATA DATASET MODEL"
base2new BiomedCoOp "$(per_dataset_config "$REPO/configs/trainers/BiomedCoOp/base_to_novel" "$2")" "$@" 50
