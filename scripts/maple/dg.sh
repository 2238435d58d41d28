#!/usr/bin/env bash
# usage: bash scripts/maple/dg.sh DATA SOURCE SHOTS MODEL   (seeds 1 2 3; TARGETS="..." to choose targets)
# Domain generalisation: the SOURCE few-shot run (reused when finished), then its model scored on the
# test split of each of SOURCE's DG targets without retraining (scripts/common.sh dg).
source "$(dirname "$0")/../common.sh"
usage_check 4 $# "bash scripts/maple/dg.sh DATA SOURCE SHOTS MODEL"
dg MaPLe "$REPO/configs/trainers/MaPLe/default.yaml" "$@"
