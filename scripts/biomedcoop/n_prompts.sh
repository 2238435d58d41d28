#!/usr/bin/env bash
# usage: bash scripts/biomedcoop/n_prompts.sh DATA DATASET SHOTS MODEL   (seeds 1 2 3)
# BiomedCoOp with the first N LLM descriptions per class, for each N of COUNTS (default "1 5 10 25 50";
# the shipped ensembles hold 50 per class), everything else as configured for DATASET. Each N writes
# $OUTPUT_ROOT/<dataset>/shots_<K>/BiomedCoOp_<MODEL>/nctx4_cscFalse_ctpend_nprompts_<N>/seed<S>; then a
# table of accuracy per N and a plot of accuracy against N ($OUTPUT_ROOT/n_prompts_<dataset>_shots<K>.png).
# Environment: as scripts/common.sh (SEEDS, OUTPUT_ROOT=output/n_prompts, EXTRA_OPTS, FORCE, PRINT_RUNS), COUNTS.
OUTPUT_ROOT="${OUTPUT_ROOT:-output/n_prompts}"
source "$(dirname "$0")/../common.sh"
usage_check 4 $# "bash scripts/biomedcoop/n_prompts.sh DATA DATASET SHOTS MODEL"
config=$(per_dataset_config "$REPO/configs/trainers/BiomedCoOp/few_shot" "$2")
for n in ${COUNTS:-1 5 10 25 50}; do
    run_variant "nprompts_$n" "TRAINER.BIOMEDCOOP.N_PROMPTS $n" few_shot BiomedCoOp "$config" "$@"
done
report make_tables.py "$OUTPUT_ROOT" --against TRAINER.BIOMEDCOOP.N_PROMPTS --also prompts_kept_share --seeds $SEEDS
report plot_results.py "$OUTPUT_ROOT" --against TRAINER.BIOMEDCOOP.N_PROMPTS \
    --out "$OUTPUT_ROOT/n_prompts_${2,,}_shots$3.png"
