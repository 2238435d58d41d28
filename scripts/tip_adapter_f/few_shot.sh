#!/usr/bin/env bash
# usage: bash scripts/tip_adapter_f/few_shot.sh DATA DATASET SHOTS MODEL   (seeds 1 2 3)
source "$(dirname "$0")/../common.sh"
usage_check 4 $# "bash scripts/tip_adapter_f/few_shot.sh DATA DATASET SHOTS MODEL"
few_shot TipAdapterF "$REPO/configs/trainers/TipAdapterF/few_shot.yaml" "$@"
