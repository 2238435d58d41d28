#!/usr/bin/env bash
# usage: bash scripts/biomedcoop/eval_fewshot.sh DATA DATASET SHOTS [MODEL]   (seeds 1 2 3; MODEL BiomedCLIP)
# Evaluates trained BiomedCoOp checkpoints on DATASET's test split into
# $EVAL_ROOT/<dataset>/shots_<K>/BiomedCoOp_<MODEL>/nctx4_cscFalse_ctpend/seed<S>/ (results.json, log.txt).
# By default the authors' released checkpoints, fetched into $CKPT_DIR (default released/) when absent;
# MODEL_ROOT=output evaluates this toolkit's own few-shot runs instead (LOAD_EPOCH picks the epoch).
# Environment: SEEDS, EVAL_ROOT=output_eval, CKPT_DIR=released, MODEL_ROOT, LOAD_EPOCH=100, FORCE=1 (redo finished seeds), EXTRA_OPTS.
source "$(dirname "$0")/../common.sh"
usage_check 3 $# "bash scripts/biomedcoop/eval_fewshot.sh DATA DATASET SHOTS [MODEL]"
data=$1 dataset=${2,,} shots=$3 model=${4:-BiomedCLIP}
CKPT_DIR="${CKPT_DIR:-released}"
MODEL_ROOT="${MODEL_ROOT:-}"
download=0
if [ -z "$MODEL_ROOT" ]; then MODEL_ROOT="$CKPT_DIR/few_shot"; download=1; fi
epoch="${LOAD_EPOCH:-100}"
dcfg=$(dataset_config "$dataset")
config=$(per_dataset_config "$REPO/configs/trainers/BiomedCoOp/few_shot" "$dataset")
sub="$dataset/shots_$shots/BiomedCoOp_${model}/nctx4_cscFalse_ctpend"
evaluated=0
for seed in $SEEDS; do
    model_dir="$MODEL_ROOT/$sub/seed$seed"
    out="${EVAL_ROOT:-output_eval}/$sub/seed$seed"
    ckpt="$model_dir/prompt_learner/model.pth.tar-$epoch"
    have_checkpoint "$ckpt" "$seed" "$download" --task few_shot --datasets "$dataset" --shots "$shots" \
        --seeds "$seed" --dir "$CKPT_DIR" || continue
    "$PYTHON" "$REPO/train.py" --root "$data" --seed "$seed" --trainer "BiomedCoOp_${model}" \
        --dataset-config-file "$dcfg" --config-file "$config" --output-dir "$out" $(skip_flag) \
        --model-dir "$model_dir" --load-epoch "$epoch" --eval-only DATASET.NUM_SHOTS "$shots" ${EXTRA_OPTS:-}
    evaluated=$((evaluated + 1))
done
if [ "$evaluated" = 0 ]; then echo "error: no checkpoint found for any seed of $sub under $MODEL_ROOT" >&2; exit 1; fi
