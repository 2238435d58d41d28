"""engine.runs: the settings digest, the run identity and the one definition of a finished run."""

import json
import os

import pytest

from engine.runs import (
    FAILED,
    FINISHED,
    PENDING,
    RUNNING,
    STALE,
    RunIdentity,
    model_label,
    run_status,
    settings_digest,
    split_method,
)

CONFIG = {
    "TRAINER.NAME": "CoOp_BiomedCLIP", "MODEL.BACKBONE.NAME": "BiomedCLIP", "MODEL.BACKBONE.PRETRAINED": True,
    "DATASET.NAME": "BTMRI", "DATASET.NUM_SHOTS": 4, "DATASET.SUBSAMPLE_CLASSES": "all",
    "DATASET.FEWSHOT_PROTOCOL": "balanced", "DATASET.ROOT": "/data/a", "OPTIM.MAX_EPOCH": 50, "SEED": 1,
}


def write_record(folder, config=CONFIG, **fields):
    os.makedirs(folder, exist_ok=True)
    record = {"method": "CoOp", "backbone": "BiomedCLIP", "dataset": "BTMRI", "num_shots": 4, "seed": 1,
              "subsample_classes": "all", "accuracy": 50.0, "label": "", "fewshot_protocol": "balanced",
              "config": config, **fields}
    with open(os.path.join(folder, "results.json"), "w") as f:
        json.dump(record, f)
    return record


def test_digest_ignores_locations_and_seed_but_not_number_settings():
    base = settings_digest(CONFIG)
    assert base == settings_digest(dict(reversed(list(CONFIG.items()))))  # key order does not matter
    assert settings_digest({**CONFIG, "DATASET.ROOT": "/elsewhere", "SEED": 3, "OUTPUT_DIR": "x"}) == base
    assert settings_digest({**CONFIG, "run.model_dir": "/runs/seed2"}) == base  # each seed loads its own
    assert settings_digest({**CONFIG, "OPTIM.MAX_EPOCH": 200}) != base
    assert len(base) == 12 and settings_digest({}) == "unknown"


def test_identity_from_a_record_and_from_the_config_agree():
    record = {"method": "CoOp", "backbone": "BiomedCLIP", "dataset": "BTMRI", "num_shots": 4,
              "subsample_classes": "all", "label": "", "fewshot_protocol": "balanced", "config": CONFIG}
    ident = RunIdentity.from_record(record)
    assert ident == RunIdentity.from_config(CONFIG)
    assert (ident.protocol, ident.task, ident.shots, ident.model) == ("few_shot", "all", 4, "BiomedCLIP")
    other = RunIdentity.from_record({**record, "config": {**CONFIG, "OPTIM.MAX_EPOCH": 200}})
    assert other != ident and other.cell == ident.cell  # one cell, two settings

    b2n = RunIdentity.from_record({**record, "subsample_classes": "new", "num_shots": 16})
    assert (b2n.protocol, b2n.task, b2n.shots) == ("base2new", "new", 16)
    moved = RunIdentity.from_record({**record, "eval_only": True, "dataset": "BUSI"}, source="BTMRI")
    assert (moved.protocol, moved.task) == ("transfer", "BTMRI")
    own_eval = RunIdentity.from_record({**record, "eval_only": True}, source="BTMRI")
    assert own_eval.protocol == "few_shot"  # a released checkpoint tested on its own dataset
    stated = RunIdentity.from_record({**record, "protocol": "dg", "task": "BUSI"})
    assert (stated.protocol, stated.task) == ("dg", "BUSI")
    dg = RunIdentity.from_record({**record, "eval_only": True, "protocol": "dg", "source": "BTMRI", "dataset": "BUSI"})
    assert (dg.protocol, dg.task, dg.dataset) == ("dg", "BTMRI", "BUSI")  # task: where the weights come from
    assert RunIdentity.from_record({**record, "protocol": "few_shot"}).task == "all"
    random = RunIdentity.from_record({**record, "pretrained": False})
    assert random.model == "BiomedCLIP-random"
    assert RunIdentity.from_record({**record, "label": "ce", "fewshot_protocol": "imbalanced"}).variant == \
        "imbalanced_ce"


def test_generic_model_labels_with_underscores_keep_the_method_whole():
    assert split_method("CoOp_OpenCLIP-org--my_model") == "CoOp"
    config = {**CONFIG, "MODEL.BACKBONE.NAME": "OpenCLIP", "run.model": "org--my_model"}
    assert model_label(config) == "OpenCLIP-org--my_model"
    assert model_label({**config, "MODEL.BACKBONE.PRETRAINED": False}) == "OpenCLIP-org--my_model-random"


def test_run_status_finished_stale_failed_pending(tmp_path):
    run = str(tmp_path / "seed1")
    assert run_status(run).state == PENDING
    os.makedirs(run)
    open(os.path.join(run, "log.txt"), "w").write("epoch [1/50]\nTraceback\nRuntimeError: out of memory\n")
    failed = run_status(run, CONFIG)
    assert failed.state == FAILED and failed.log_tail[-1] == "RuntimeError: out of memory"

    write_record(run)
    assert run_status(run).state == FINISHED
    assert run_status(run, {**CONFIG, "DATASET.ROOT": "/moved", "NEW.KEY": 1}).state == FINISHED
    stale = run_status(run, {**CONFIG, "OPTIM.MAX_EPOCH": 200})
    assert stale.state == STALE and stale.differences == ["OPTIM.MAX_EPOCH: 50 -> 200"]
    assert run_status(run, {**CONFIG, "SEED": 2}).state == STALE  # another seed is another run

    write_record(run, config=None)
    assert run_status(run, CONFIG).state == STALE and "does not record" in run_status(run, CONFIG).reason
    with open(os.path.join(run, "results.json"), "w") as f:
        f.write("[1, 2]")
    listed = run_status(run, CONFIG)
    assert listed.state == STALE and "not a results record" in listed.reason and not listed.differences
    with open(os.path.join(run, "results.json"), "w") as f:
        f.write("{")
    broken = run_status(run, CONFIG)
    assert broken.state == FAILED and broken.unreadable and "cannot be read" in broken.reason


def test_a_live_lock_makes_a_run_running(tmp_path, monkeypatch):
    import engine.runs as runs

    run = str(tmp_path / "seed1")
    write_record(run)
    holder = {"pid": 4242, "host": "node1", "started": "2026-01-01T00:00:00+00:00"}
    monkeypatch.setattr(runs, "_lock_holder", lambda run_dir: holder if run_dir == run else None)
    status = run_status(run, CONFIG)
    assert status.state == RUNNING and status.holder == holder
    assert run_status(str(tmp_path / "other")).state == PENDING


@pytest.mark.parametrize("state", [FINISHED, STALE])
def test_status_of_a_finished_run_carries_its_record(tmp_path, state):
    run = str(tmp_path / "seed1")
    write_record(run, accuracy=61.5)
    requested = CONFIG if state == FINISHED else {**CONFIG, "OPTIM.MAX_EPOCH": 1}
    status = run_status(run, requested)
    assert status.state == state and status.record["accuracy"] == 61.5


def test_the_lock_of_this_very_process_is_not_another_writer(tmp_path):
    run_lock = pytest.importorskip("engine.run_lock")
    run = str(tmp_path / "seed1")
    write_record(run)
    with run_lock.RunLock(run):
        assert run_lock.lock_holder(run) is not None
        assert run_status(run, CONFIG).state == FINISHED
