#!/usr/bin/env bash
# usage: bash scripts/prograd/base2new.sh DATA DATASET MODEL   (seeds 1 2 3; 16 shots)
source "$(dirname "$0")/../common.sh"
usage_check 3 $# "bash scripts/prograd/base2new.sh DATA DATASET MODEL"
base2new ProGrad "$REPO/configs/trainers/ProGrad/vit_b16_base2new.yaml" "$@" 50
