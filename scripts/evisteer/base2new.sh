#!/usr/bin/env bash
# usage: bash scripts/evisteer/base2new.sh DATA DATASET MODEL   (seeds 1 2 3; 16 shots)
source "$(dirname "$0")/../common.sh"
usage_check 3 $# "bash scripts/evisteer/base2new.sh DATA DATASET MODEL"
# The public code has no base-to-novel settings of its own: the few-shot ones, 16 shots, last epoch tested.
base2new EviSteer "$REPO/configs/trainers/EviSteer/default.yaml" "$@" ""
