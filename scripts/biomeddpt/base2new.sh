#!/usr/bin/env bash
# usage: bash scripts/biomeddpt/base2new.sh DATA DATASET MODEL   (seeds 1 2 3; 16 shots)
# NPROC>1 (torchrun) only with EXTRA_OPTS="TRAINER.BIOMEDDPT.VISUAL_LEARNED True"; the default trains on cached features, one process.
source "$(dirname "$0")/../common.sh"
usage_check 3 $# "bash scripts/biomeddpt/base2new.sh DATA DATASET MODEL"
# 50 epochs in every base-to-novel config: test the latest checkpoint.
base2new BiomedDPT "$(per_dataset_config "$REPO/configs/trainers/BiomedDPT/base_to_novel" "$2")" "$@" ""
