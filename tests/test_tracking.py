"""TRAIN.REPORT_TO: TensorBoard event files by default (curves that match the log, the final accuracy,
the settings as hparams), W&B and MLflow through their modules (fakes here: no network, no install),
and one-line errors for a bad value or a missing package."""

from __future__ import annotations

import importlib.machinery
import json
import os
import re
import sys
import types

import pytest

import train
from engine import tracking
from engine.errors import UserError
from engine.tracking import EVENT_GLOB, Tracker, event_scalars, report_targets

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def argv(root, out, *extra, trainer="BiomedCoOp_TinyBiomedCLIP", config="BiomedCoOp/few_shot/btmri.yaml",
         epochs=3, flags=()):
    return [
        "--root", str(root), "--seed", "1", "--trainer", trainer, *flags,
        "--dataset-config-file", os.path.join(REPO, "configs/datasets/btmri.yaml"),
        "--config-file", os.path.join(REPO, "configs/trainers", config),
        "--output-dir", str(out), "DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", str(epochs),
        "DATALOADER.NUM_WORKERS", "0", *extra,
    ]


def event_files(folder) -> list[str]:
    return sorted(p.name for p in folder.glob(EVENT_GLOB))


def hparams_of(run_dir) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    values = {}
    for key, value in start.session_start_info.hparams.items():
        kind = value.WhichOneof("kind")
        values[key] = getattr(value, kind)
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    return {"hparams": values, "metrics": [m.name.tag for m in experiment.experiment.metric_infos]}


LOG_LINE = re.compile(r"epoch \[(\d+)/\d+\] batch \[1/1\] (.*) lr (\S+)$")


def test_a_tiny_run_writes_curves_that_match_its_log_and_its_results(synthetic_btmri, tmp_path):
    out = tmp_path / "run"
    # 8 training images in one batch: each epoch's average is the batch the log prints.
    assert train.main(argv(synthetic_btmri, out, "DATALOADER.TRAIN_X.BATCH_SIZE", "8")) == 0
    scalars = event_scalars(str(out))
    assert {"train/loss", "train/loss_ce", "train/loss_sccm", "train/loss_kdsp", "train/acc", "train/lr",
            "test/acc", "test/macro_f1"} <= set(scalars)
    logged = {}
    for line in (out / "log.txt").read_text().splitlines():
        match = LOG_LINE.search(line)
        if match:
            words = match.group(2).split()
            values = dict(zip(words[0::2], map(float, words[1::2])))
            logged[int(match.group(1))] = {**values, "lr": float(match.group(3))}
    assert sorted(logged) == [1, 2, 3]
    for key in ("loss", "loss_ce", "loss_sccm", "loss_kdsp", "acc"):
        assert [step for step, _ in scalars[f"train/{key}"]] == [1, 2, 3]
        for step, value in scalars[f"train/{key}"]:
            assert value == pytest.approx(logged[step][key], abs=1e-4), (key, step)
    # The log prints the rate after the epoch's scheduler step; the curve holds the rate each epoch trained with.
    lrs = dict(scalars["train/lr"])
    assert lrs[1] == pytest.approx(1e-5) and lrs[2] == pytest.approx(logged[1]["lr"], rel=1e-3)
    assert lrs[3] == pytest.approx(logged[2]["lr"], rel=1e-3)
    record = json.loads((out / "results.json").read_text())
    assert scalars["test/acc"] == [(3, pytest.approx(record["accuracy"], abs=1e-4))]
    meta = hparams_of(out)
    assert meta["metrics"] == ["test/acc", "test/macro_f1"]
    from engine.runs import settings_digest

    assert meta["hparams"]["settings_digest"] == settings_digest(record["config"])
    assert meta["hparams"]["method"] == "BiomedCoOp" and meta["hparams"]["OPTIM.MAX_EPOCH"] == 3
    assert "TRAIN.REPORT_TO" not in record["config"]  # changes no number: not part of the run's identity
    # Nothing else in the run folder: the event file sits beside the usual files.
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([*event_files(out), "log.txt", "prompt_learner", "results.json"])
    assert len(event_files(out)) == 1

    # Run again afresh into the same folder: its curves replace the old ones (one file, three points).
    assert train.main(argv(synthetic_btmri, out, "DATALOADER.TRAIN_X.BATCH_SIZE", "8", "TRAIN.REPORT_TO",
                           "tensorboard")) == 0
    assert len(event_files(out)) == 1 and len(event_scalars(str(out))["train/loss"]) == 3


def test_report_to_none_writes_no_event_file_and_eval_only_writes_the_accuracy(synthetic_btmri, tmp_path):
    trained = tmp_path / "trained"
    assert train.main(argv(synthetic_btmri, trained, "TRAIN.REPORT_TO", "none", epochs=1)) == 0
    assert event_files(trained) == [] and (trained / "results.json").is_file()
    evaluated = tmp_path / "evaluated"
    assert train.main(argv(synthetic_btmri, evaluated, flags=["--eval-only", "--model-dir", str(trained)],
                           epochs=1)) == 0
    record = json.loads((evaluated / "results.json").read_text())
    scalars = event_scalars(str(evaluated))
    assert set(scalars) == {"test/acc", "test/macro_f1"}
    assert scalars["test/acc"] == [(1, pytest.approx(record["accuracy"], abs=1e-4))]
    assert hparams_of(evaluated)["hparams"]["run.eval_only"] == 1  # a boolean, stored by torch as a number


def test_a_training_free_method_writes_its_accuracy_and_settings(synthetic_btmri, tmp_path):
    out = tmp_path / "zs"
    assert train.main(argv(synthetic_btmri, out, trainer="ZeroShot_TinyBiomedCLIP",
                           config="ZeroShot/vit_b16.yaml")) == 0
    record = json.loads((out / "results.json").read_text())
    scalars = event_scalars(str(out))
    assert set(scalars) == {"test/acc", "test/macro_f1"}
    assert scalars["test/acc"] == [(0, pytest.approx(record["accuracy"], abs=1e-4))]
    assert hparams_of(out)["hparams"]["method"] == "ZeroShot"


def test_a_feature_method_writes_its_val_curve(synthetic_btmri, tmp_path):
    out = tmp_path / "lpp"
    assert train.main(argv(synthetic_btmri, out, trainer="LPPlusPlus_TinyBiomedCLIP",
                           config="LPPlusPlus/few_shot.yaml", epochs=12)) == 0
    scalars = event_scalars(str(out))
    assert [step for step, _ in scalars["val/acc"]] == list(range(1, 13)) and len(scalars["train/loss"]) == 12
    kept = re.search(r"Kept the model of epoch (\d+) \(val accuracy ([\d.]+)%\)", (out / "log.txt").read_text())
    best = max(value for _, value in scalars["val/acc"])
    assert float(kept.group(2)) == pytest.approx(best, abs=0.01)
    assert dict(scalars["val/acc"])[int(kept.group(1))] == pytest.approx(best)
    assert scalars["test/acc"][0][1] == pytest.approx(json.loads((out / "results.json").read_text())["accuracy"])


def fake_module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)  # find_spec sees it as installed
    module.__dict__.update(attrs)
    return module


def test_wandb_and_mlflow_get_the_same_values_offline_through_their_modules(synthetic_btmri, tmp_path,
                                                                              monkeypatch):
    calls: list[tuple] = []

    class Config(dict):
        def update(self, values, allow_val_change=False):
            calls.append(("wandb.config", dict(values)))

    class Summary(dict):
        def update(self, values):
            calls.append(("wandb.summary", dict(values)))

    class Run:
        config, summary = Config(), Summary()

        def log(self, values, step=None):
            calls.append(("wandb.log", step, dict(values)))

        def finish(self):
            calls.append(("wandb.finish",))

    def init(**kwargs):
        calls.append(("wandb.init", kwargs))
        return Run()

    recorder = lambda what: lambda *a, **k: calls.append((what, a, k))  # noqa: E731
    monkeypatch.setitem(sys.modules, "wandb", fake_module("wandb", init=init))
    monkeypatch.setitem(sys.modules, "mlflow", fake_module(
        "mlflow", set_tracking_uri=recorder("mlflow.uri"), set_experiment=recorder("mlflow.experiment"),
        start_run=recorder("mlflow.start"), log_metrics=recorder("mlflow.metrics"),
        log_params=recorder("mlflow.params"), end_run=recorder("mlflow.end")))
    for var in ("WANDB_MODE", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    out = tmp_path / "run"
    assert train.main(argv(synthetic_btmri, out, "TRAIN.REPORT_TO", "wandb,mlflow", epochs=2)) == 0
    assert event_files(out) == []  # tensorboard not asked for
    (init_call,) = [c for c in calls if c[0] == "wandb.init"]
    assert init_call[1]["mode"] == "offline" and init_call[1]["dir"] == str(out)
    (uri,) = [c[1][0] for c in calls if c[0] == "mlflow.uri"]
    assert uri == "file:" + os.path.join(str(out), "mlruns")
    wandb_steps = [(c[1], sorted(c[2])) for c in calls if c[0] == "wandb.log"]
    mlflow_steps = [(c[2]["step"], sorted(c[1][0])) for c in calls if c[0] == "mlflow.metrics" and "step" in c[2]]
    assert wandb_steps == mlflow_steps
    assert [s for s, _ in wandb_steps] == [1, 2, 2] and "train/loss_kdsp" in wandb_steps[0][1]
    record = json.loads((out / "results.json").read_text())
    (summary,) = [c[1] for c in calls if c[0] == "wandb.summary"]
    assert summary["test/acc"] == pytest.approx(record["accuracy"])
    (params,) = [c[1][0] for c in calls if c[0] == "mlflow.params"]
    assert params["dataset"] == "BTMRI" and params["seed"] == 1
    assert [c[0] for c in calls][-2:] in (["wandb.finish", "mlflow.end"], ["mlflow.end", "wandb.finish"])


def test_bad_values_and_missing_packages_stop_before_anything_is_written(synthetic_btmri, tmp_path, monkeypatch,
                                                                           capsys):
    assert report_targets("tensorboard, WandB") == ["tensorboard", "wandb"]
    assert report_targets("none") == [] and report_targets(["mlflow"]) == ["mlflow"]
    for bad in ("tensorbord", "none,wandb", ""):
        with pytest.raises(tracking.TrackingError, match="TRAIN.REPORT_TO"):
            report_targets(bad)
    out = tmp_path / "run"
    assert train.main(argv(synthetic_btmri, out, "TRAIN.REPORT_TO", "comet")) == 2
    assert "TRAIN.REPORT_TO must name one or more of tensorboard, wandb, mlflow" in capsys.readouterr().err

    real = tracking.importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    monkeypatch.delitem(sys.modules, "wandb", raising=False)
    assert train.main(argv(synthetic_btmri, out, "TRAIN.REPORT_TO", "tensorboard,wandb")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: TRAIN.REPORT_TO asks for wandb, which is not installed: pip install wandb "
                   "(or leave wandb out of TRAIN.REPORT_TO)."]
    assert not out.exists()
    with pytest.raises(UserError, match="pip install mlflow"):
        from engine.config import check_config_values, get_cfg_default

        cfg = get_cfg_default()
        cfg.TRAIN.REPORT_TO = "mlflow"
        monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name, *a: None)
        check_config_values(cfg)


def test_a_backend_that_cannot_write_is_dropped_with_one_note(tmp_path, monkeypatch):
    class Broken:
        closed = False

        def scalars(self, values, step):
            raise OSError(28, "No space left on device")

        def close(self):
            Broken.closed = True

    notes = []
    tracker = Tracker(str(tmp_path), ["tensorboard"], "x", log=notes.append)
    monkeypatch.setattr(tracker, "_backend", lambda target: Broken())
    tracker.scalars({"train/loss": 1.0}, 1)
    tracker.scalars({"train/loss": 0.5}, 2)  # dropped after the first failure: no second note
    tracker.final({"test/acc": 50.0}, 2, {"seed": 1})
    assert len(notes) == 1 and "tensorboard tracking stopped" in notes[0] and "No space left" in notes[0]
    assert not Broken.closed  # it was dropped, not closed
