#!/usr/bin/env bash
# usage: bash scripts/maple/base2new.sh DATA DATASET MODEL   (seeds 1 2 3; 16 shots)
source "$(dirname "$0")/../common.sh"
usage_check 3 $# "bash scripts/maple/base2new.sh DATA DATASET MODEL"
# Test the latest checkpoint, so OPTIM.MAX_EPOCH in EXTRA_OPTS needs no second change.
base2new MaPLe "$REPO/configs/trainers/MaPLe/default.yaml" "$@" ""
