#!/usr/bin/env bash
# usage: bash scripts/biomeddpt/few_shot.sh DATA DATASET SHOTS MODEL   (seeds 1 2 3)
# NPROC>1 (torchrun) only with EXTRA_OPTS="TRAINER.BIOMEDDPT.VISUAL_LEARNED True"; the default trains on cached features, one process.
source "$(dirname "$0")/../common.sh"
usage_check 4 $# "bash scripts/biomeddpt/few_shot.sh DATA DATASET SHOTS MODEL"
few_shot BiomedDPT "$(per_dataset_config "$REPO/configs/trainers/BiomedDPT/few_shot" "$2")" "$@"
