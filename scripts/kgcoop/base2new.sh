#!/usr/bin/env bash
# usage: bash scripts/kgcoop/base2new.sh DATA DATASET MODEL   (seeds 1 2 3; 16 shots)
source "$(dirname "$0")/../common.sh"
usage_check 3 $# "bash scripts/kgcoop/base2new.sh DATA DATASET MODEL"
base2new KgCoOp "$REPO/configs/trainers/KgCoOp/vit_b16_base2new.yaml" "$@" 50
