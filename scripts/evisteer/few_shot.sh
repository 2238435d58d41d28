#!/usr/bin/env bash
# usage: bash scripts/evisteer/few_shot.sh DATA DATASET SHOTS MODEL   (seeds 1 2 3)
source "$(dirname "$0")/../common.sh"
usage_check 4 $# "bash scripts/evisteer/few_shot.sh DATA DATASET SHOTS MODEL"
few_shot EviSteer "$REPO/configs/trainers/EviSteer/default.yaml" "$@"
