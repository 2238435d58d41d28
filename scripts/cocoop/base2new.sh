#!/usr/bin/env bash
# usage: bash scripts/cocoop/base2new.sh DATA DATASET MODEL   (seeds 1 2 3; 16 shots)
# CoCoOp trains 10 epochs, so the novel-class test loads epoch 10 (the reference's script asked for 50).
source "$(dirname "$0")/../common.sh"
usage_check 3 $# "bash scripts/cocoop/base2new.sh DATA DATASET MODEL"
base2new CoCoOp "$REPO/configs/trainers/CoCoOp/vit_b16_base2new.yaml" "$@" 10
