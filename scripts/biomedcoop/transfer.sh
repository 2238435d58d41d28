#!/usr/bin/env bash
# usage: bash scripts/biomedcoop/transfer.sh DATA SOURCE "TARGETS" SHOTS MODEL   (seeds 1 2 3)
# Cross-dataset transfer: BiomedCoOp learns its context on SOURCE (few-shot, SOURCE's config), then
# that context, spliced with each target's own class names, is tested on each dataset of TARGETS
# (train.py --eval-only --model-dir; a checkpoint holds only the context, so any class list fits).
# Training writes $OUTPUT_ROOT/<source>/shots_<K>/BiomedCoOp_<MODEL>/nctx4_cscFalse_ctpend/seed<S>
# (its own test split: the diagonal); each target
# $OUTPUT_ROOT/<target>/shots_<K>/BiomedCoOp_<MODEL>/nctx4_cscFalse_ctpend_from_<source>/seed<S>.
# Then tools/transfer_table.py prints the source x target table of every transfer run under $OUTPUT_ROOT
# (call this once per source to fill the rows).
# Environment: as scripts/common.sh (SEEDS, OUTPUT_ROOT=output/transfer, EXTRA_OPTS, FORCE, PRINT_RUNS).
OUTPUT_ROOT="${OUTPUT_ROOT:-output/transfer}"
source "$(dirname "$0")/../common.sh"
usage_check 5 $# "bash scripts/biomedcoop/transfer.sh DATA SOURCE \"TARGETS\" SHOTS MODEL"
data=$1 source=${2,,} targets=${3,,} shots=$4 model=$5
config=$(per_dataset_config "$REPO/configs/trainers/BiomedCoOp/few_shot" "$source")
few_shot BiomedCoOp "$config" "$data" "$source" "$shots" "$model"
mdir=$(model_folder "$model")
for target in $targets; do
    if [ "$target" = "$source" ]; then continue; fi  # the source's own test is the training run's
    dcfg=$(dataset_config "$target" "$data")
    for seed in $SEEDS; do
        model_dir="$OUTPUT_ROOT/$source/shots_$shots/BiomedCoOp_${mdir}/$(run_tag)/seed$seed"
        out="$OUTPUT_ROOT/$target/shots_$shots/BiomedCoOp_${mdir}/$(RUN_LABEL="from_$source" run_tag)/seed$seed"
        run_train "$PYTHON" "$REPO/train.py" --root "$data" --seed "$seed" --trainer "BiomedCoOp_${model}" \
            --dataset-config-file "$dcfg" --config-file "$config" --output-dir "$out" $(skip_flag) \
            --model-dir "$model_dir" --eval-only \
            DATASET.NUM_SHOTS "$shots" TRAINER.RUN_LABEL "from_$source" ${EXTRA_OPTS:-}
    done
done
report transfer_table.py "$OUTPUT_ROOT" --seeds $SEEDS
