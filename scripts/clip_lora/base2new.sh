#!/usr/bin/env bash
# usage: bash scripts/clip_lora/base2new.sh DATA DATASET MODEL   (seeds 1 2 3; 16 shots)
source "$(dirname "$0")/../common.sh"
usage_check 3 $# "bash scripts/clip_lora/base2new.sh DATA DATASET MODEL"
# The epoch count follows from 500 x 16 iterations and the dataset's size: test the latest checkpoint.
base2new CLIPLoRA "$REPO/configs/trainers/CLIPLoRA/default.yaml" "$@" ""
