#!/usr/bin/env bash
# usage: bash scripts/biomedcoop/eval_base2new.sh DATA DATASET [MODEL]   (seeds 1 2 3; MODEL BiomedCLIP)
# Evaluates base-class-trained BiomedCoOp checkpoints on the base classes and on the novel classes into
# $EVAL_ROOT/base2new/{test_base,test_new}/<dataset>/shots_16/BiomedCoOp_<MODEL>/nctx4_cscFalse_ctpend/seed<S>/.
# By default the authors' released checkpoints, fetched into $CKPT_DIR (default released/) when absent;
# MODEL_ROOT=output/base2new evaluates this toolkit's own base-to-novel runs instead.
# Environment: SEEDS, EVAL_ROOT=output_eval, CKPT_DIR=released, MODEL_ROOT, LOAD_EPOCH=50, FORCE=1 (redo finished seeds), EXTRA_OPTS.
source "$(dirname "$0")/../common.sh"
usage_check 2 $# "bash scripts/biomedcoop/eval_base2new.sh DATA DATASET [MODEL]"
data=$1 dataset=${2,,} model=${3:-BiomedCLIP}
CKPT_DIR="${CKPT_DIR:-released}"
MODEL_ROOT="${MODEL_ROOT:-}"
download=0
if [ -z "$MODEL_ROOT" ]; then MODEL_ROOT="$CKPT_DIR/base2new"; download=1; fi
epoch="${LOAD_EPOCH:-50}"
dcfg=$(dataset_config "$dataset")
config=$(per_dataset_config "$REPO/configs/trainers/BiomedCoOp/base_to_novel" "$dataset")
sub="$dataset/shots_16/BiomedCoOp_${model}/nctx4_cscFalse_ctpend"
evaluated=0
for seed in $SEEDS; do
    model_dir="$MODEL_ROOT/train_base/$sub/seed$seed"
    ckpt="$model_dir/prompt_learner/model.pth.tar-$epoch"
    have_checkpoint "$ckpt" "$seed" "$download" --task base2new --datasets "$dataset" --seeds "$seed" \
        --dir "$CKPT_DIR" || continue
    for subsample in base new; do
        out="${EVAL_ROOT:-output_eval}/base2new/test_$subsample/$sub/seed$seed"
        "$PYTHON" "$REPO/train.py" --root "$data" --seed "$seed" --trainer "BiomedCoOp_${model}" \
            --dataset-config-file "$dcfg" --config-file "$config" --output-dir "$out" $(skip_flag) \
            --model-dir "$model_dir" --load-epoch "$epoch" --eval-only \
            DATASET.NUM_SHOTS 16 DATASET.SUBSAMPLE_CLASSES "$subsample" ${EXTRA_OPTS:-}
    done
    evaluated=$((evaluated + 1))
done
if [ "$evaluated" = 0 ]; then echo "error: no checkpoint found for any seed of $sub under $MODEL_ROOT" >&2; exit 1; fi
