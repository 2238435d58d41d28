#!/usr/bin/env bash
# usage: bash scripts/biomedcoop/ablation.sh DATA DATASET SHOTS MODEL   (seeds 1 2 3)
# BiomedCoOp's components, one at a time, on the same seeds and so the same few-shot images:
#   ce             cross-entropy only: SCCM_LAMBDA 0 and KDSP_LAMBDA 0 (CoOp's loss with everything
#                  else, schedule, batch, context init, held at BiomedCoOp's, so only the loss differs)
#   sccm           + SCCM: KDSP_LAMBDA 0
#   kdsp_all       + KDSP with a teacher over every description: SCCM_LAMBDA 0, TAU 1000 (no selection)
#   kdsp_selected  + KDSP with the outlier test: SCCM_LAMBDA 0
#   full           BiomedCoOp as configured for DATASET (both terms, selection on)
# Loss weights and TAU are the dataset's config values where a term is on. Each variant writes its own
# folder, $OUTPUT_ROOT/<dataset>/shots_<K>/BiomedCoOp_<MODEL>/nctx4_cscFalse_ctpend_<variant>/seed<S>,
# then tools/make_tables.py prints the variants as rows (mean +- std over seeds).
# Environment: as scripts/common.sh (SEEDS, OUTPUT_ROOT=output/ablation, EXTRA_OPTS, FORCE, PRINT_RUNS),
# VARIANTS="ce sccm kdsp_all kdsp_selected full" (a subset runs only those).
OUTPUT_ROOT="${OUTPUT_ROOT:-output/ablation}"
source "$(dirname "$0")/../common.sh"
usage_check 4 $# "bash scripts/biomedcoop/ablation.sh DATA DATASET SHOTS MODEL"
config=$(per_dataset_config "$REPO/configs/trainers/BiomedCoOp/few_shot" "$2")
B=TRAINER.BIOMEDCOOP
for variant in ${VARIANTS:-ce sccm kdsp_all kdsp_selected full}; do
    case "$variant" in
        ce) opts="$B.SCCM_LAMBDA 0.0 $B.KDSP_LAMBDA 0.0" ;;
        sccm) opts="$B.KDSP_LAMBDA 0.0" ;;
        kdsp_all) opts="$B.SCCM_LAMBDA 0.0 $B.TAU 1000.0" ;;
        kdsp_selected) opts="$B.SCCM_LAMBDA 0.0" ;;
        full) opts="" ;;
        *) echo "error: unknown variant '$variant' in VARIANTS; valid: ce sccm kdsp_all kdsp_selected full" >&2; exit 2 ;;
    esac
    run_variant "$variant" "$opts" few_shot BiomedCoOp "$config" "$@"
done
report make_tables.py "$OUTPUT_ROOT" --seeds $SEEDS
