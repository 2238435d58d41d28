"""Sharing finished runs on the Hugging Face Hub: the learned tensors, the settings, the results and a
model card whose metadata carries the accuracy machine-readably (the Hub's model-index).

`push_run` uploads one seed folder to ORG/NAME (files at the repository's root); `push_grid` scans an
output folder (results.records) and uploads one repository per method and dataset holding every
finished run at its path under that folder, so `MODEL_ROOT=hf-hub:ORG/NAME` stands for the output
root in the eval scripts. engine/hub.py loads them back (`hf-hub:ORG/NAME[/SUB/FOLDER]`).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections import defaultdict
from statistics import mean

from engine.errors import UserError
from engine.hub import CONFIG_FILE, RESULTS_FILE, WEIGHTS_FILE, checkpoint_files, endpoint, export_weights
from engine.run_weights import evaluated_model
from engine.runs import read_record, settings_digest

# The method's paper, as README.md's Methods table names it (arXiv ids where the repository states them).
METHOD_PAPERS = {
    "BiomedCoOp": "Koleilat et al., CVPR 2025 (arXiv 2411.15232)",
    "CoOp": "Zhou et al., IJCV 2022",
    "CoCoOp": "Zhou et al., CVPR 2022",
    "KgCoOp": "Yao et al., CVPR 2023",
    "ProGrad": "Zhu et al., ICCV 2023",
    "ClipAdapter": "Gao et al., IJCV 2024",
    "TipAdapter": "Zhang et al., ECCV 2022",
    "TipAdapterF": "Zhang et al., ECCV 2022",
    "LinearProbe": "Radford et al., ICML 2021",
    "LPPlusPlus": "Huang et al., CVPR 2024",
    "CLIPLoRA": "Zanella and Ben Ayed, CVPRW 2024",
    "CLIPSVD": "Koleilat et al., arXiv 2509.03740",
    "MaPLe": "Khattak et al., CVPR 2023",
    "EviSteer": "Koleilat et al., MICCAI 2026 (arXiv 2605.26292)",
    "BiomedDPT": "Peng et al., IEEE JBHI 2026 (arXiv 2505.05189)",
    "OGKD": "Tran and Shen, arXiv 2606.04922",
}
# Hub ids of the named model families whose weights live in a Hub model repository.
BACKBONE_HUB_IDS = {
    "BiomedCLIP": "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224",
    "CLIP": "openai/clip-vit-base-patch16",
    "MedSigLIP": "google/medsiglip-448",
}
TOOLKIT_CITATION = """@inproceedings{koleilat2025biomedcoop,
  title     = {BiomedCoOp: Learning to Prompt for Biomedical Vision-Language Models},
  author    = {Koleilat, Taha and Asgariandehkordi, Hojat and Rivaz, Hassan and Xiao, Yiming},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2025}
}"""


def backbone_hub_id(config: dict) -> str | None:
    """The Hub model repository of the frozen backbone, when it has one (random-weight twins have none)."""
    if config.get("MODEL.BACKBONE.PRETRAINED") is False:
        return None
    hub = str(config.get("MODEL.BACKBONE.HUB") or "").removeprefix("hf-hub:")
    if re.fullmatch(r"[\w.-]+/[\w.-]+", hub):
        return hub
    return BACKBONE_HUB_IDS.get(str(config.get("MODEL.BACKBONE.NAME")))


def run_weights(run_dir: str, record: dict) -> dict[str, str]:
    """{model name: checkpoint} a finished run stands for; a UserError when it has nothing to share."""
    if record.get("eval_only") and record.get("epochs"):
        model_dir, _ = evaluated_model(run_dir, record)
        raise UserError(f"{run_dir} is an eval-only run: the weights it tested belong to {model_dir}; push that run.")
    found = checkpoint_files(run_dir)
    if not found:
        raise UserError(f"{run_dir} holds no learned weights (<model>/model.pth.tar-<epoch>): a training-free run "
                        "has nothing to share.")
    return found


def stage_run(run_dir: str, dest: str) -> dict:
    """Write what a pushed run holds into `dest`: results.json, config.json, <model>/model.safetensors."""
    record, why = read_record(run_dir)
    if record is None:
        raise UserError(f"{os.path.join(run_dir, RESULTS_FILE)} {why or 'is missing'}: push finished runs only.")
    weights = run_weights(run_dir, record)
    os.makedirs(dest, exist_ok=True)
    for name, checkpoint in weights.items():
        export_weights(checkpoint, os.path.join(dest, name, WEIGHTS_FILE))
    with open(os.path.join(dest, RESULTS_FILE), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
    with open(os.path.join(dest, CONFIG_FILE), "w", encoding="utf-8") as f:
        json.dump(record.get("config") or {}, f, indent=2, sort_keys=True)
    return record


def _task(record: dict) -> str:
    subsample = str(record.get("subsample_classes") or "all").lower()
    return {"base": "base classes", "new": "novel classes"}.get(subsample, "few-shot")


def model_card(repo_id: str, runs: list[tuple[str, dict]]) -> str:
    """README.md of a repository holding `runs` [(sub-folder, results.json record)], YAML metadata first."""
    from huggingface_hub import EvalResult, ModelCardData

    first = runs[0][1]
    method, dataset, config = first["method"], first["dataset"], first.get("config") or {}
    hub_id = backbone_hub_id(config)
    results = [
        EvalResult(task_type="image-classification", task_name=f"Few-shot image classification ({_task(r)})",
                   dataset_type=dataset, dataset_name=dataset, dataset_split=r.get("split", "test"),
                   metric_type="accuracy", metric_value=round(float(r["accuracy"]), 4),
                   metric_name=f"{r.get('split', 'test')} accuracy, K={r.get('num_shots')}, seed {r.get('seed')}"
                               + (f" ({sub})" if sub else ""))
        for sub, r in runs
    ]
    data = ModelCardData(model_name=repo_id, base_model=hub_id, eval_results=results, license=None,
                         tags=["few-shot", "prompt-learning", "biomedical", "vision-language", method],
                         pipeline_tag="zero-shot-image-classification")
    rows = "\n".join(
        f"| `{sub or '.'}` | {r.get('backbone')} | {r.get('num_shots')} | {r.get('seed')} | {_task(r)} | "
        f"{float(r['accuracy']):.2f} | {float(r.get('macro_f1', float('nan'))):.2f} | "
        f"`{settings_digest(r.get('config') or {})}` |"
        for sub, r in runs
    )
    by_k = defaultdict(list)
    for _, r in runs:
        by_k[(r.get("num_shots"), _task(r))].append(float(r["accuracy"]))
    means = "\n".join(f"- K={k} ({task}): {mean(v):.2f} over {len(v)} seed(s)" for (k, task), v in sorted(
        by_k.items(), key=lambda item: (str(item[0][1]), int(item[0][0] if item[0][0] is not None else 0))))
    sub, record = runs[0]
    ref = f"hf-hub:{repo_id}" + (f"/{sub}" if sub else "")
    dataset_cfg = f"configs/datasets/{dataset.lower()}.yaml"
    text = f"""---
{data.to_yaml()}
---

# {method} on {dataset} ({first.get('backbone')})

Learned weights of {method} ({METHOD_PAPERS.get(method, 'see the toolkit README')}) on the frozen backbone
{first.get('backbone')}{f' ([{hub_id}](https://huggingface.co/{hub_id}))' if hub_id else ''}, trained on
{dataset} with the BiomedCoOp toolkit. Only what the method learns is here (safetensors); the backbone
comes from its own repository.

| Run | Backbone | K (shots) | Seed | Classes | Accuracy (%) | Macro-F1 (%) | Settings digest |
|---|---|---|---|---|---|---|---|
{rows}

{means}

The settings digest hashes every setting that changes the numbers (the seed aside); runs with equal
digests are seeds of one configuration. Each run's folder holds `results.json` (accuracy, per-class
accuracy, run facts), `config.json` (the effective config) and `<model>/{WEIGHTS_FILE}`.

## Load and evaluate

With the toolkit installed (its README, "Set-up"):

```bash
python tools/predict.py --run {ref} scan.png                  # class probabilities for your images
python train.py --root DATA --seed {record.get('seed')} --trainer {record.get('trainer')} \\
    --dataset-config-file {dataset_cfg} --config-file <the method's config (README, Methods)> \\
    --eval-only --model-dir {ref} --output-dir output_eval/{dataset.lower()} DATASET.NUM_SHOTS {record.get('num_shots')}
```

The repository is downloaded once into the Hugging Face cache; later runs work offline (HF_HUB_OFFLINE=1).

## Citation

Method: {METHOD_PAPERS.get(method, method)}. The toolkit:

```bibtex
{TOOLKIT_CITATION}
```
"""
    return text


def _api(token: str | None):
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint(), token=token)


def _upload(folder: str, repo_id: str, private: bool, token: str | None, message: str) -> str:
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    api = _api(token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=message)
    except OfflineModeIsEnabled:
        raise UserError(f"Uploading to {repo_id} needs the Hub, and HF_HUB_OFFLINE is set (the README's offline "
                        "set-up): run this command with HF_HUB_OFFLINE=0.") from None
    except (HfHubHTTPError, OSError) as err:
        raise UserError(f"Uploading to {repo_id} failed ({err.__class__.__name__}: {str(err).splitlines()[0]}); "
                        "check the repository name and your token (hf auth login, or HF_TOKEN).") from None
    return getattr(info, "oid", "") or ""


def check_repo_id(repo_id: str) -> None:
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id or ""):
        raise UserError(f"--repo must be ORG/NAME (a Hub model repository); got {repo_id!r}.")


def push_run(run_dir: str, repo_id: str, private: bool = False, token: str | None = None) -> tuple[str, dict]:
    """Upload one finished run to `repo_id`; returns (commit id, the run's record)."""
    check_repo_id(repo_id)
    with tempfile.TemporaryDirectory() as folder:
        record = stage_run(run_dir, folder)
        with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as f:
            f.write(model_card(repo_id, [("", record)]))
        commit = _upload(folder, repo_id, private, token,
                         f"{record['method']} on {record['dataset']}, K={record['num_shots']}, seed {record['seed']}")
    return commit, record


def grid_repos(root: str, org: str) -> dict[str, list]:
    """{ORG/<Method>-<Dataset>: [finished runs with learned weights]} of an output folder; other runs are left out."""
    from results.records import scan

    repos: dict[str, list] = defaultdict(list)
    for run in scan(root):
        if not run.ok or run.record.get("eval_only") or not checkpoint_files(run.path):
            continue
        name = re.sub(r"[^\w.-]+", "-", f"{run.method}-{run.dataset}")
        repos[f"{org}/{name}"].append(run)
    return dict(repos)


def push_grid(root: str, org: str, private: bool = False, token: str | None = None,
              on_repo=None) -> dict[str, int]:
    """One repository per method and dataset, each run at its path under `root`; {repo: runs pushed}."""
    if not re.fullmatch(r"[\w.-]+", org or ""):
        raise UserError(f"--org must be a Hub user or organisation name; got {org!r}.")
    repos = grid_repos(root, org)
    if not repos:
        raise UserError(f"No finished run with learned weights under {root} (training-free and eval-only runs "
                        "have none to share).")
    pushed = {}
    for repo_id, runs in sorted(repos.items()):
        with tempfile.TemporaryDirectory() as folder:
            staged = []
            for run in runs:
                sub = os.path.relpath(run.path, root).replace(os.sep, "/")
                staged.append((sub, stage_run(run.path, os.path.join(folder, sub))))
            with open(os.path.join(folder, "README.md"), "w", encoding="utf-8") as f:
                f.write(model_card(repo_id, staged))
            _upload(folder, repo_id, private, token, f"{len(staged)} run(s) from {os.path.basename(root) or root}")
        pushed[repo_id] = len(runs)
        if on_repo is not None:
            on_repo(repo_id, len(runs))
    return pushed
