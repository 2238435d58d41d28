#!/usr/bin/env bash
# usage: bash scripts/clip_adapter/base2new.sh DATA DATASET MODEL   (seeds 1 2 3; 16 shots)
# The adapter acts on image features and the classifier is the text of the class names, so an
# adapter trained on the base classes is tested on the new ones. Tip-Adapter(-F), the linear probe
# and LP++ learn one weight per training class and have no base-to-novel script.
source "$(dirname "$0")/../common.sh"
usage_check 3 $# "bash scripts/clip_adapter/base2new.sh DATA DATASET MODEL"
base2new ClipAdapter "$REPO/configs/trainers/ClipAdapter/few_shot.yaml" "$@" 20
