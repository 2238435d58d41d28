#!/usr/bin/env bash
# usage: bash scripts/biomeddpt/dg.sh DATA SOURCE SHOTS MODEL   (seeds 1 2 3; TARGETS="..." to choose targets)
# Domain generalisation: the SOURCE few-shot run (reused when finished), then its model scored on the
# test split of each of SOURCE's DG targets without retraining (scripts/common.sh dg).
# NPROC>1 (torchrun) only with EXTRA_OPTS="TRAINER.BIOMEDDPT.VISUAL_LEARNED True"; the default trains on cached features, one process.
source "$(dirname "$0")/../common.sh"
usage_check 4 $# "bash scripts/biomeddpt/dg.sh DATA SOURCE SHOTS MODEL"
dg BiomedDPT "$(per_dataset_config "$REPO/configs/trainers/BiomedDPT/few_shot" "$2")" "$@"
