#!/usr/bin/env bash
# Shared by every method's scripts. Runs seeds (default 1 2 3) of one method into the reference's
# output layout; an interrupted seed resumes. A seed whose results.json was made with exactly the
# requested settings is skipped; one made with other settings stops the script with the keys that
# differ (FORCE=1 redoes it, another OUTPUT_ROOT keeps both).
# Environment: SEEDS="1 2 3", OUTPUT_ROOT=output, PYTHON=python, EXTRA_OPTS="KEY VALUE ...", FORCE=1,
# RUN_LABEL=NAME (a variant's name: TRAINER.RUN_LABEL, and its own folder <config tag>_NAME),
# WAIT_FOR_LOCK=1 (a seed whose folder another run is writing waits for it instead of stopping),
# NPROC=N (train each seed under torchrun with N processes: CLIP-LoRA, CLIP-SVD, EviSteer, MaPLe; BiomedDPT
# only with EXTRA_OPTS="TRAINER.BIOMEDDPT.VISUAL_LEARNED True": its default trains on cached features, one process).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
OUTPUT_ROOT="${OUTPUT_ROOT:-output}"
SEEDS="${SEEDS:-1 2 3}"

usage_check() {  # usage_check NEEDED GIVEN USAGE
    if [ "$2" -lt "$1" ]; then echo "usage: $3" >&2; exit 2; fi
}

dataset_config() {  # dataset_config DATASET [DATA] -> configs/datasets/<dataset>.yaml, else DATA/<Name>/dataset.yaml
    local cfg="$REPO/configs/datasets/${1,,}.yaml" dir
    if [ -f "$cfg" ]; then echo "$cfg"; return; fi
    if [ -n "${2:-}" ]; then  # a dataset made by tools/prepare_dataset.py keeps its config beside its data
        for dir in "$2"/*/; do
            local name; name=$(basename "$dir")
            if [ "${name,,}" = "${1,,}" ] && [ -f "$dir/dataset.yaml" ]; then echo "${dir%/}/dataset.yaml"; return; fi
        done
    fi
    echo "error: no dataset config for '$1': neither $cfg nor ${2:-DATA}/<$1>/dataset.yaml" \
         "(tools/prepare_dataset.py writes it for your own data); benchmarks:" \
         "$(cd "$REPO/configs/datasets" && ls *.yaml | sed 's/.yaml//' | tr '\n' ' ')" >&2
    exit 2
}

skip_flag() {  # --skip-finished unless FORCE=1 asks to redo finished seeds; WAIT_FOR_LOCK=1: --wait-for-lock
    if [ "${FORCE:-0}" != 1 ]; then echo "--skip-finished"; fi
    if [ "${WAIT_FOR_LOCK:-0}" = 1 ]; then echo "--wait-for-lock"; fi
}

weights_tag() {  # "-random" when EXTRA_OPTS sets MODEL.BACKBONE.PRETRAINED False: its own folder
    local prev="" word tag=""
    for word in ${EXTRA_OPTS:-}; do
        if [ "$prev" = MODEL.BACKBONE.PRETRAINED ]; then
            case "${word,,}" in false|0|no|off) tag="-random" ;; *) tag="" ;; esac
        fi
        prev=$word
    done
    echo "$tag"
}

model_folder() {  # model_folder MODEL: the <MODEL> part of a run's folder, as results label the model:
    # MODEL, MODEL-random under random weights, and for a generic family (OpenCLIP, HFCLIP, HFSigLIP)
    # also the model MODEL.BACKBONE.HUB / PATH picks, so two such models never share a folder.
    case " ${EXTRA_OPTS:-} " in
        *" MODEL.BACKBONE.HUB "* | *" MODEL.BACKBONE.PATH "*)
            # shellcheck disable=SC2086  # EXTRA_OPTS is KEY VALUE words, as for every run
            "$PYTHON" "$REPO/train.py" --trainer "CoOp_$1" --print-model-label ${EXTRA_OPTS:-} ;;
        *) echo "$1$(weights_tag)" ;;
    esac
}

run_tag() {  # the config-tag folder: "_imbalanced" under DATASET.FEWSHOT_PROTOCOL imbalanced, "_<RUN_LABEL>"
    local prev="" word tag=""
    for word in ${EXTRA_OPTS:-}; do
        if [ "$prev" = DATASET.FEWSHOT_PROTOCOL ]; then
            case "$word" in balanced) tag="" ;; *) tag="_$word" ;; esac
        fi
        prev=$word
    done
    echo "nctx4_cscFalse_ctpend${tag}${RUN_LABEL:+_$RUN_LABEL}"
}

label_opts() {  # TRAINER.RUN_LABEL <RUN_LABEL> when RUN_LABEL is set
    if [ -n "${RUN_LABEL:-}" ]; then echo "TRAINER.RUN_LABEL $RUN_LABEL"; fi
}

# A folder with default.yaml alone (GDA) holds one setting for every dataset: no note then.
per_dataset_config() {  # per_dataset_config DIR DATASET -> DIR/<dataset>.yaml, else DIR/default.yaml
    local cfg="$1/${2,,}.yaml"
    if [ ! -f "$cfg" ]; then
        local other=0 f
        for f in "$1"/*.yaml; do [ "${f##*/}" = default.yaml ] || other=1; done
        if [ "$other" = 1 ]; then
            echo "note: no $cfg; using $1/default.yaml (copy a similar benchmark's config there to tune)" >&2
        fi
        cfg="$1/default.yaml"
    fi
    echo "$cfg"
}

# have_checkpoint CKPT SEED DOWNLOAD [download_checkpoints.py ARGS...]: true when CKPT exists, after
# fetching it with tools/download_checkpoints.py when DOWNLOAD=1; otherwise a note that SEED is skipped.
# A pushed run (MODEL_ROOT=hf-hub:ORG/NAME, tools/push_to_hub.py) is fetched by train.py itself.
have_checkpoint() {
    local ckpt=$1 seed=$2 download=$3; shift 3
    case "$ckpt" in hf-hub:*) return 0 ;; esac
    if [ ! -f "$ckpt" ] && [ "$download" = 1 ]; then
        "$PYTHON" "$REPO/tools/download_checkpoints.py" "$@" || true
    fi
    if [ ! -f "$ckpt" ]; then echo "note: no checkpoint $ckpt; seed $seed skipped" >&2; return 1; fi
}

run_train() {  # runs one train.py command; with PRINT_RUNS=1 prints it instead (tools/sweep.py plans from this)
    if [ "${PRINT_RUNS:-0}" = 1 ]; then printf '%q ' "$@"; echo; return; fi
    # NPROC=N: training under torchrun, N processes (pixel-path methods; docs/cluster.md); evaluation stays one.
    if [ "${NPROC:-1}" -gt 1 ] && [[ " $* " != *" --eval-only "* ]]; then
        local py=$1; shift
        "$py" -m torch.distributed.run --standalone --nproc_per_node "$NPROC" "$@"
    else
        "$@"
    fi
}

# few_shot METHOD CONFIG DATA DATASET SHOTS MODEL
few_shot() {
    local method=$1 config=$2 data=$3 dataset=${4,,} shots=$5 model=$6
    local dcfg; dcfg=$(dataset_config "$dataset" "$data")
    local mdir; mdir=$(model_folder "$model")
    local rtag; rtag=$(run_tag)
    for seed in $SEEDS; do
        local dir="$OUTPUT_ROOT/$dataset/shots_$shots/${method}_${mdir}/$rtag/seed$seed"
        run_train "$PYTHON" "$REPO/train.py" --root "$data" --seed "$seed" --trainer "${method}_${model}" \
            --dataset-config-file "$dcfg" --config-file "$config" --output-dir "$dir" $(skip_flag) \
            DATASET.NUM_SHOTS "$shots" $(label_opts) ${EXTRA_OPTS:-}
    done
}

# base2new METHOD CONFIG DATA DATASET MODEL LOAD_EPOCH: train on base classes, test on new ones.
# An empty LOAD_EPOCH tests the latest checkpoint (methods whose epoch count depends on the data).
base2new() {
    local method=$1 config=$2 data=$3 dataset=${4,,} model=$5 epoch=$6
    local dcfg; dcfg=$(dataset_config "$dataset" "$data")
    local mdir; mdir=$(model_folder "$model")
    local rtag; rtag=$(run_tag)
    for seed in $SEEDS; do
        local sub="$dataset/shots_16/${method}_${mdir}/$rtag/seed$seed"
        local train_dir="$OUTPUT_ROOT/base2new/train_base/$sub" test_dir="$OUTPUT_ROOT/base2new/test_new/$sub"
        run_train "$PYTHON" "$REPO/train.py" --root "$data" --seed "$seed" --trainer "${method}_${model}" \
            --dataset-config-file "$dcfg" --config-file "$config" --output-dir "$train_dir" $(skip_flag) \
            DATASET.NUM_SHOTS 16 DATASET.SUBSAMPLE_CLASSES base $(label_opts) ${EXTRA_OPTS:-}
        run_train "$PYTHON" "$REPO/train.py" --root "$data" --seed "$seed" --trainer "${method}_${model}" \
            --dataset-config-file "$dcfg" --config-file "$config" --output-dir "$test_dir" $(skip_flag) \
            --model-dir "$train_dir" ${epoch:+--load-epoch "$epoch"} --eval-only \
            DATASET.NUM_SHOTS 16 DATASET.SUBSAMPLE_CLASSES new $(label_opts) ${EXTRA_OPTS:-}
    done
}

dg_targets() {  # dg_targets SOURCE -> the config names of SOURCE's domain-generalisation targets
    local found
    found=$("$PYTHON" -c 'import sys; sys.path.insert(0, sys.argv[1])
from datasets.benchmarks import dg_targets, spec_for
print(" ".join(spec_for(t).config for t in dg_targets(sys.argv[2])))' "$REPO" "$1") || exit 2
    if [ -z "$found" ]; then
        echo "error: '$1' has no domain-generalisation targets (btmri and busi have); name them with TARGETS=\"...\"" >&2
        exit 2
    fi
    echo "$found"
}

# dg METHOD CONFIG DATA SOURCE SHOTS MODEL: domain generalisation. Trains on SOURCE exactly as few_shot
# does (a finished few-shot run with the same settings is reused), then scores each seed's model,
# without retraining, on the test split of each target (TARGETS="...", default SOURCE's DG targets):
# train.py --eval-only --model-dir <the source run> TEST.DATASET <target>, written to
# $OUTPUT_ROOT/<target>/shots_<K>/<METHOD>_<MODEL>/<config tag>_from_<source>/seed<S> (transfer.sh's layout).
dg() {
    local method=$1 config=$2 data=$3 source=${4,,} shots=$5 model=$6
    local targets; targets=${TARGETS:-$(dg_targets "$source")}
    few_shot "$method" "$config" "$data" "$source" "$shots" "$model"
    local dcfg; dcfg=$(dataset_config "$source" "$data")
    local mdir; mdir=$(model_folder "$model")
    local rtag; rtag=$(run_tag)
    local label="${RUN_LABEL:+${RUN_LABEL}_}from_$source"
    local ttag; ttag=$(RUN_LABEL="$label" run_tag)
    for target in ${targets,,}; do
        if [ "$target" = "$source" ]; then continue; fi  # the source's own test is the few-shot run's
        for seed in $SEEDS; do
            local model_dir="$OUTPUT_ROOT/$source/shots_$shots/${method}_${mdir}/$rtag/seed$seed"
            local out="$OUTPUT_ROOT/$target/shots_$shots/${method}_${mdir}/$ttag/seed$seed"
            run_train "$PYTHON" "$REPO/train.py" --root "$data" --seed "$seed" --trainer "${method}_${model}" \
                --dataset-config-file "$dcfg" --config-file "$config" --output-dir "$out" $(skip_flag) \
                --model-dir "$model_dir" --eval-only \
                DATASET.NUM_SHOTS "$shots" TRAINER.RUN_LABEL "$label" TEST.DATASET "$target" ${EXTRA_OPTS:-}
        done
    done
}

# run_variant LABEL "KEY VALUE ..." FUNCTION ARGS...: FUNCTION (few_shot, base2new) for one variant:
# RUN_LABEL=LABEL (its own folder, results.json "label") and the variant's overrides after EXTRA_OPTS.
run_variant() {
    local label=$1 opts=$2; shift 2
    RUN_LABEL="$label" EXTRA_OPTS="${EXTRA_OPTS:-} $opts" "$@"
}

# report TOOL ARGS...: runs tools/TOOL on the finished runs, unless PRINT_RUNS=1 only lists them.
report() {
    local tool=$1; shift
    if [ "${PRINT_RUNS:-0}" != 1 ]; then "$PYTHON" "$REPO/tools/$tool" "$@"; fi
}
