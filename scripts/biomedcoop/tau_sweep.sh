#!/usr/bin/env bash
# usage: bash scripts/biomedcoop/tau_sweep.sh DATA DATASET SHOTS MODEL   (seeds 1 2 3)
# BiomedCoOp at each outlier threshold TAU of TAUS (default "0.5 0.75 1.0 1.25 1.5 1.75 2.0 2.5 3.0 none"),
# everything else as configured for DATASET. "none" is no pruning: TAU 1000, above the largest
# |z-score| any set of N_PROMPTS scores can reach ((N-1)/sqrt(N), 6.9 for 50), so every description is kept.
# Each TAU writes $OUTPUT_ROOT/<dataset>/shots_<K>/BiomedCoOp_<MODEL>/nctx4_cscFalse_ctpend_tau_<TAU>/seed<S>;
# then a table of accuracy and the share of descriptions the test kept (mean over training steps and
# seeds) per TAU, and a plot of accuracy against TAU ($OUTPUT_ROOT/tau_sweep_<dataset>_shots<K>.png).
# Environment: as scripts/common.sh (SEEDS, OUTPUT_ROOT=output/tau_sweep, EXTRA_OPTS, FORCE, PRINT_RUNS), TAUS.
OUTPUT_ROOT="${OUTPUT_ROOT:-output/tau_sweep}"
source "$(dirname "$0")/../common.sh"
usage_check 4 $# "bash scripts/biomedcoop/tau_sweep.sh DATA DATASET SHOTS MODEL"
config=$(per_dataset_config "$REPO/configs/trainers/BiomedCoOp/few_shot" "$2")
for tau in ${TAUS:-0.5 0.75 1.0 1.25 1.5 1.75 2.0 2.5 3.0 none}; do
    value=$tau
    if [ "$tau" = none ]; then value=1000.0; fi
    case "$value" in *.*) ;; *) value="$value.0" ;; esac  # TAU is a float key: 2 -> 2.0
    run_variant "tau_$tau" "TRAINER.BIOMEDCOOP.TAU $value" few_shot BiomedCoOp "$config" "$@"
done
report make_tables.py "$OUTPUT_ROOT" --against TRAINER.BIOMEDCOOP.TAU --also prompts_kept_share --seeds $SEEDS
report plot_results.py "$OUTPUT_ROOT" --against TRAINER.BIOMEDCOOP.TAU \
    --out "$OUTPUT_ROOT/tau_sweep_${2,,}_shots$3.png"
