#!/usr/bin/env bash
# usage: bash scripts/gda/few_shot.sh DATA DATASET SHOTS MODEL   (seeds 1 2 3)
# GDA is training-free; configs/trainers/GDA/few_shot/<dataset>.yaml, else default.yaml.
source "$(dirname "$0")/../common.sh"
usage_check 4 $# "bash scripts/gda/few_shot.sh DATA DATASET SHOTS MODEL"
few_shot GDA "$(per_dataset_config "$REPO/configs/trainers/GDA/few_shot" "$2")" "$@"
