#!/usr/bin/env bash
# usage: bash scripts/reproduce_paper.sh [--dry-run] DATA MODEL
# The grid behind the paper's tables: every method whose scripts exist, on 11 datasets x K 1 2 4 8 16
# x seeds 1-3 (few-shot), and on the 10 datasets with a class split (base-to-novel, 16 shots), then
# the tables ($OUTPUT_ROOT/tables.md) and the figure ($OUTPUT_ROOT/results.png). Zero-shot methods do
# not depend on K and run once, at the largest K. Finished seeds are skipped, so rerunning after an
# interruption carries on; a failed run is reported at the end and does not stop the others.
# --dry-run runs nothing: it prints every run and how many image-tower passes the grid needs.
# Environment (to run part of the grid): DATASETS="btmri busi ...", SHOTS="1 2 4 8 16", SEEDS="1 2 3",
# METHODS="coop biomedcoop ..." (script folder names; zeroshot_ensemble = zeroshot with ENSEMBLE=1),
# FEW_SHOT=0 / BASE2NEW=0 (skip that half), OUTPUT_ROOT=output, PYTHON=python, EXTRA_OPTS="KEY VALUE ...".
# Base-to-novel scripts evaluate a fixed epoch (50 for most methods): an EXTRA_OPTS OPTIM.MAX_EPOCH
# override there makes the novel-class evaluation miss its checkpoint.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dry=0
if [ "${1:-}" = "--dry-run" ]; then dry=1; shift; fi
if [ $# -lt 2 ]; then echo "usage: bash scripts/reproduce_paper.sh [--dry-run] DATA MODEL" >&2; exit 2; fi
DATA=$1 MODEL=$2
PYTHON="${PYTHON:-python}"
export OUTPUT_ROOT="${OUTPUT_ROOT:-output}" SEEDS="${SEEDS:-1 2 3}"
DATASETS="${DATASETS:-btmri busi chmnist covid ctkidney dermamnist kneexray kvasir lungcolon octmnist retina}"
SHOTS="${SHOTS:-1 2 4 8 16}"
METHODS="${METHODS:-zeroshot zeroshot_ensemble clip_adapter tip_adapter tip_adapter_f linear_probe lp_plus_plus \
coop cocoop kgcoop prograd clip_lora clip_svd biomedcoop}"
NO_CLASS_SPLIT="busi"  # too few classes for a base/novel split
largest_k=${SHOTS##* }

run_python="$PYTHON"
if [ "$dry" = 1 ]; then
    # Every script calls "$PYTHON" train.py ...: record those calls instead of running them.
    plan_dir=$(mktemp -d)
    trap 'rm -rf "$plan_dir"' EXIT
    cat > "$plan_dir/record" <<EOF
#!/usr/bin/env bash
{ printf '%s' "\$1"; shift; for a in "\$@"; do printf '\\0%s' "\$a"; done; printf '\\n'; } >> "$plan_dir/commands"
EOF
    chmod +x "$plan_dir/record"
    : > "$plan_dir/commands"
    run_python="$plan_dir/record"
fi

failed=()
run() {  # run LABEL SCRIPT ARGS...: one script call; a failure is remembered, not fatal
    local label=$1; shift
    if ! PYTHON="$run_python" bash "$@"; then failed+=("$label"); fi
}

for entry in $METHODS; do
    folder=$entry ensemble=0
    if [ "$entry" = zeroshot_ensemble ]; then folder=zeroshot ensemble=1; fi
    script="$REPO/scripts/$folder/few_shot.sh"
    if [ ! -f "$script" ]; then echo "note: no $script; $entry skipped" >&2; continue; fi
    shots=$SHOTS
    if [ "$folder" = zeroshot ]; then shots=$largest_k; fi
    if [ "${FEW_SHOT:-1}" != 1 ]; then shots=""; fi
    for dataset in $DATASETS; do
        for k in $shots; do
            ENSEMBLE=$ensemble run "$entry $dataset K=$k" "$script" "$DATA" "$dataset" "$k" "$MODEL"
        done
        b2n="$REPO/scripts/$folder/base2new.sh"
        if [ "${BASE2NEW:-1}" = 1 ] && [ -f "$b2n" ] && [[ " $NO_CLASS_SPLIT " != *" $dataset "* ]]; then
            ENSEMBLE=$ensemble run "$entry $dataset base-to-novel" "$b2n" "$DATA" "$dataset" "$MODEL"
        fi
    done
done

if [ "$dry" = 1 ]; then
    "$PYTHON" "$REPO/tools/plan_grid.py" "$plan_dir/commands"
    exit 0
fi

"$PYTHON" "$REPO/tools/make_tables.py" "$OUTPUT_ROOT" --paper --seeds $SEEDS
"$PYTHON" "$REPO/tools/make_tables.py" "$OUTPUT_ROOT" --paper --seeds $SEEDS --format markdown \
    --out "$OUTPUT_ROOT/tables.md"
"$PYTHON" "$REPO/tools/plot_results.py" "$OUTPUT_ROOT" --paper --out "$OUTPUT_ROOT/results.png"
if [ ${#failed[@]} -gt 0 ]; then
    echo "error: ${#failed[@]} script call(s) failed (rerun this command to retry them):" >&2
    printf '  %s\n' "${failed[@]}" >&2
    exit 1
fi
