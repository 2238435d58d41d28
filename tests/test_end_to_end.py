"""The whole pipeline on the tiny twin: scripts, results, parse tool, resume, eval-only."""

import json
import os
import shlex
import subprocess
import sys

import torch
from script_runs import run_script_in_process

import train
from engine.trainer import TrainerX

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = "btmri/shots_4/BiomedCoOp_TinyBiomedCLIP/nctx4_cscFalse_ctpend"


def run_script(script, args, cwd, **env):
    full_env = {**os.environ, "PYTHON": sys.executable, **env}
    return subprocess.run(["bash", os.path.join(REPO, script), *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=600)


def test_few_shot_script_runs_its_seeds_and_parse_tool_summarises(synthetic_btmri, tmp_path, monkeypatch):
    """few_shot.sh lists its default seeds 1 2 3; two of them (the same code for every seed) run with the
    BTMRI config's 100 epochs: each seed trains on its own few-shot draw and keeps only its final
    checkpoint; parse_test_res.py gives the mean and std over seeds; the script itself (bash, python
    train.py) run again skips both finished seeds. The training runs go in this process, as the script
    lists them (no Python start-up each)."""
    script, args = "scripts/biomedcoop/few_shot.sh", [synthetic_btmri, "btmri", "4", "TinyBiomedCLIP"]
    listing = run_script(script, args, tmp_path, PRINT_RUNS="1").stdout.splitlines()
    assert [shlex.split(line)[shlex.split(line).index("--seed") + 1] for line in listing] == ["1", "2", "3"]
    seeds = (1, 2)
    run_script_in_process(script, args, tmp_path, monkeypatch, "", SEEDS="1 2")
    run_dir = tmp_path / "output" / RUN
    accs = []
    for seed in seeds:
        seed_dir = run_dir / f"seed{seed}"
        result = json.load(open(seed_dir / "results.json"))
        assert result["seed"] == seed and result["num_shots"] == 4 and result["total"] == 24
        accs.append(result["accuracy"])
        log = (seed_dir / "log.txt").read_text()
        assert "Finished training" in log and f"* accuracy: {result['accuracy']:.2f}%" in log
        ckpt = torch.load(seed_dir / "prompt_learner" / "model.pth.tar-100", weights_only=False)
        assert list(ckpt["state_dict"]) == ["ctx"] and ckpt["epoch"] == 100
        assert not (seed_dir / "resume.pth").exists()
    subsets = [json.load(open(os.path.join(synthetic_btmri, "BTMRI/split_fewshot", f"shot_4-seed_{s}.json")))
               for s in seeds]
    assert subsets[0]["train"] != subsets[1]["train"]  # each seed draws its own images

    parsed = subprocess.run([sys.executable, os.path.join(REPO, "tools/parse_test_res.py"), str(run_dir)],
                            capture_output=True, text=True, check=True).stdout
    mean = sum(accs) / len(accs)
    std = (sum((a - mean) ** 2 for a in accs) / len(accs)) ** 0.5
    assert f"* accuracy: {mean:.2f}% +- {std:.2f}%" in parsed

    again = run_script(script, args, tmp_path, SEEDS="1 2")
    assert again.returncode == 0 and again.stdout.count("Skip this job") == 2, again.stderr[-3000:]


def train_args(root, out, trainer="BiomedCoOp_TinyBiomedCLIP", epochs=3, extra=()):
    return [
        "--root", root, "--seed", "1", "--trainer", trainer,
        "--dataset-config-file", os.path.join(REPO, "configs/datasets/btmri.yaml"),
        "--config-file", os.path.join(REPO, "configs/trainers/BiomedCoOp/few_shot/btmri.yaml"),
        "--output-dir", str(out), "DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", str(epochs),
        "DATALOADER.NUM_WORKERS", "0", *extra,
    ]


def final_ctx(out, epochs=3):
    path = os.path.join(out, "prompt_learner", f"model.pth.tar-{epochs}")
    return torch.load(path, weights_only=False)["state_dict"]["ctx"]


def test_interrupted_run_resumes_to_the_same_result(synthetic_btmri, tmp_path, monkeypatch):
    # The PMC-CLIP selection rule here, so both selection paths train end to end.
    extra = ["TRAINER.BIOMEDCOOP.SELECTION", "abs_zscore"]
    assert train.main(train_args(synthetic_btmri, tmp_path / "straight", extra=extra)) == 0

    original = TrainerX.after_epoch

    def crash_after_first_epoch(self):
        original(self)
        if self.epoch == 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(TrainerX, "after_epoch", crash_after_first_epoch)
    assert train.main(train_args(synthetic_btmri, tmp_path / "resumed", extra=extra)) == 130  # Ctrl-C's status
    assert (tmp_path / "resumed" / "resume.pth").exists()
    monkeypatch.setattr(TrainerX, "after_epoch", original)
    assert train.main(train_args(synthetic_btmri, tmp_path / "resumed", extra=extra)) == 0
    assert torch.equal(final_ctx(tmp_path / "straight"), final_ctx(tmp_path / "resumed"))
    straight = json.load(open(tmp_path / "straight" / "results.json"))
    resumed = json.load(open(tmp_path / "resumed" / "results.json"))
    assert straight["accuracy"] == resumed["accuracy"]


def test_eval_only_reloads_the_checkpoint(synthetic_btmri, tmp_path):
    assert train.main(train_args(synthetic_btmri, tmp_path / "run", trainer="CoOp_TinyBiomedCLIP")) == 0
    args = train_args(synthetic_btmri, tmp_path / "eval", trainer="CoOp_TinyBiomedCLIP")
    args[:0] = ["--eval-only", "--model-dir", str(tmp_path / "run"), "--load-epoch", "3"]
    assert train.main(args) == 0
    trained = json.load(open(tmp_path / "run" / "results.json"))
    evaluated = json.load(open(tmp_path / "eval" / "results.json"))
    assert evaluated["eval_only"] and evaluated["accuracy"] == trained["accuracy"]


def test_training_never_runs_the_image_tower(synthetic_btmri, tmp_path, monkeypatch):
    """Features come from the cache: the frozen tower runs during extraction only, not per batch."""
    calls = []
    from engine import features

    original = features.FeatureCache._compute

    def counting(self, jobs, *args, **kwargs):
        calls.append(len(jobs))
        return original(self, jobs, *args, **kwargs)

    monkeypatch.setattr(features.FeatureCache, "_compute", counting)
    out = tmp_path / "cache_run"
    cache = tmp_path / "features"
    args = train_args(synthetic_btmri, out, extra=["FEATURES.CACHE_DIR", str(cache)])
    assert train.main(args) == 0
    assert calls == [8 * 3, 24]  # 4 classes x 2 shots x 3 epoch views, then the 24 test images
    calls.clear()
    assert train.main(train_args(synthetic_btmri, tmp_path / "again", extra=["FEATURES.CACHE_DIR", str(cache)])) == 0
    assert calls == []  # a second run reuses every cached feature
    # ... and trains to the very same context: a warm cache does not shift the RNG stream.
    assert torch.equal(final_ctx(out), final_ctx(tmp_path / "again"))


def test_user_errors_exit_2_with_one_message(synthetic_btmri, tmp_path, capsys):
    assert train.main(train_args(synthetic_btmri, tmp_path / "x", trainer="NoSuch_TinyBiomedCLIP")) == 2
    assert "Unknown trainer" in capsys.readouterr().err
    bad = train_args(synthetic_btmri, tmp_path / "z", extra=["TRAINER.BIOMEDCOOP.SELECTION", "mad"])
    assert train.main(bad) == 2
    assert "SELECTION must be zscore or abs_zscore" in capsys.readouterr().err
    assert train.main(train_args(str(tmp_path / "empty"), tmp_path / "y")) == 2
    err = capsys.readouterr().err
    assert "Dataset folder not found" in err and "download_data.py" in err


def test_base2new_script_trains_on_base_and_tests_on_new_classes(synthetic_btmri, tmp_path, monkeypatch):
    """base2new.sh (its runs in this process) trains the base classes for the config's 50 epochs, then
    tests that model eval-only on the new classes' test images."""
    run_script_in_process("scripts/biomedcoop/base2new.sh", [synthetic_btmri, "btmri", "TinyBiomedCLIP"], tmp_path,
                          monkeypatch, "")
    sub = "btmri/shots_16/BiomedCoOp_TinyBiomedCLIP/nctx4_cscFalse_ctpend/seed1"
    base = json.load(open(tmp_path / "output/base2new/train_base" / sub / "results.json"))
    new = json.load(open(tmp_path / "output/base2new/test_new" / sub / "results.json"))
    assert base["classnames"] == ["glioma tumor", "meningioma tumor"] and not base["eval_only"]
    assert new["classnames"] == ["pituitary tumor", "normal brain"] and new["eval_only"]
    assert base["epochs"] == 50 and new["total"] == 12
