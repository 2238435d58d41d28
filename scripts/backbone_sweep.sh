#!/usr/bin/env bash
# usage: bash scripts/backbone_sweep.sh DATA DATASET SHOTS "MODELS"   (seeds 1 2 3)
# Backbones head to head on one dataset: for each MODEL (e.g. "BiomedCLIP MedSigLIP BMCCLIP CLIPViTL14"),
# zero-shot with one template, the linear probe and BiomedCoOp at SHOTS shots, each with that model's
# own preprocessing (a named preset sets INPUT.*), into $OUTPUT_ROOT/<dataset>/shots_<K>/<METHOD>_<MODEL>/
# as the methods' own scripts write them. Then tools/make_tables.py prints one row per method and
# backbone. Environment: as scripts/common.sh (SEEDS, OUTPUT_ROOT=output/backbone_sweep, EXTRA_OPTS,
# FORCE, PRINT_RUNS).
OUTPUT_ROOT="${OUTPUT_ROOT:-output/backbone_sweep}"
source "$(dirname "$0")/common.sh"
usage_check 4 $# "bash scripts/backbone_sweep.sh DATA DATASET SHOTS \"MODELS\""
data=$1 dataset=${2,,} shots=$3 models=$4
biomedcoop=$(per_dataset_config "$REPO/configs/trainers/BiomedCoOp/few_shot" "$dataset")
for model in $models; do
    few_shot ZeroShot "$REPO/configs/trainers/ZeroShot/vit_b16.yaml" "$data" "$dataset" "$shots" "$model"
    few_shot LinearProbe "$REPO/configs/trainers/LinearProbe/few_shot.yaml" "$data" "$dataset" "$shots" "$model"
    few_shot BiomedCoOp "$biomedcoop" "$data" "$dataset" "$shots" "$model"
done
report make_tables.py "$OUTPUT_ROOT/$dataset/shots_$shots" --seeds $SEEDS
