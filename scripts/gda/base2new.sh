#!/usr/bin/env bash
# usage: bash scripts/gda/base2new.sh DATA DATASET MODEL   (seeds 1 2 3)
# Fits GDA on the base classes (16 shots), then scores the new classes with the classifier the
# authors synthesise from their text and the nearest base features (checkpoint of epoch 1).
source "$(dirname "$0")/../common.sh"
usage_check 3 $# "bash scripts/gda/base2new.sh DATA DATASET MODEL"
base2new GDA "$(per_dataset_config "$REPO/configs/trainers/GDA/base_to_novel" "$2")" "$@" 1
