"""An interrupted run (stopped mid-run, its resume state saved) is not a failed one: engine.runs calls it
interrupted, the sweep resumes it without --retry-failed to the result of an uninterrupted run, and the
tables list it as such; a crashed run stays failed, and a resume state of other settings is stale."""

import json
import os
import subprocess
import sys

import make_tables
import pytest
import sweep
import torch

import train
from engine import preempt
from engine.runs import CRASH_LINE, FAILED, INTERRUPTED, STALE, latest_log, run_status
from engine.trainer import TrainerX
from results.records import scan
from results.report import build_report
from sweeps import launch, plan
from sweeps.grid import build_grid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = "OPTIM.MAX_EPOCH 3 FEATURES.TRAIN_VIEWS 1 DATALOADER.NUM_WORKERS 0 TRAIN.REPORT_TO none"
# A real train.py process that dies by SIGKILL right after epoch 1 saved its resume state.
KILLED_AFTER_EPOCH_1 = """
import os, signal, sys
import train
from engine.trainer import TrainerX
done = TrainerX.after_epoch
def after_epoch(self):
    done(self)
    if self.epoch == 0:
        os.kill(os.getpid(), signal.SIGKILL)
TrainerX.after_epoch = after_epoch
sys.exit(train.main(sys.argv[1:]))
"""


def sweep_argv(root, out, extra=FAST, *more):
    return ["--root", root, "--methods", "CoOp", "--datasets", "btmri", "--shots", "2", "--seeds", "1",
            "--models", "TinyBiomedCLIP", "--output-root", str(out), "--extra-opts", extra, *more]


def the_unit(root, out, extra=FAST):
    (unit,) = plan.plan_units(build_grid({}, {"root": root, "methods": ["CoOp"], "datasets": ["btmri"],
                                              "shots": [2], "seeds": [1], "models": ["TinyBiomedCLIP"],
                                              "output_root": str(out), "extra_opts": extra}))
    return unit


def learned(run_dir):
    path = os.path.join(run_dir, "prompt_learner", "model.pth.tar-3")
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


@pytest.fixture
def launched(monkeypatch):
    """Local launches recorded instead of run: [[unit ids], ...]."""
    calls = []
    monkeypatch.setattr(launch, "launch_local", lambda plan_path, units, *a, **k: calls.append([u.id for u in units])
                        or [])
    return calls


def stop_after_first_epoch(monkeypatch, how):
    original = TrainerX.after_epoch

    def after_epoch(self):
        if self.epoch == 0 and how == "preempt":
            preempt._requested.set()  # what the stop signal's handler does (engine/preempt.py)
        original(self)
        if self.epoch == 1 and how == "crash":
            raise RuntimeError("a bug in epoch 2")

    monkeypatch.setattr(TrainerX, "after_epoch", after_epoch)


def test_a_run_killed_after_epoch_1_reads_interrupted_and_the_sweep_resumes_it_unasked(synthetic_btmri, tmp_path,
                                                                                         capsys, monkeypatch):
    monkeypatch.setattr(launch, "encode_command", lambda plan_path, group: ["true"])  # the run encodes its own
    reference = the_unit(synthetic_btmri, tmp_path / "ref")
    assert train.main(reference.commands[0][2:]) == 0  # the same run, uninterrupted

    out = tmp_path / "out"
    unit = the_unit(synthetic_btmri, out)
    (command,), (run_dir,) = unit.commands, unit.outputs
    killed = subprocess.run([sys.executable, "-c", KILLED_AFTER_EPOCH_1, *command[2:]], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    status = run_status(run_dir, plan.requested_settings(command))
    assert status.state == INTERRUPTED, status
    assert status.reason == "stopped after epoch 1 of 3; rerunning resumes it"

    (folder,) = scan(str(out))  # what the tables list
    assert folder.state == INTERRUPTED and not folder.ok
    capsys.readouterr()
    make_tables.main([str(out)])
    tables = capsys.readouterr().out
    assert f"interrupted: {run_dir}: stopped after epoch 1 of 3; rerunning resumes it" in tables
    assert f"failed: {run_dir}" not in tables
    page = build_report(str(out), paper=False)
    assert 'data-run-state="interrupted"' in page and "0 failed, 1 interrupted (rerunning resumes them)" in page

    assert sweep.main([*sweep_argv(synthetic_btmri, out), "--dry-run"]) == 0
    assert "  interrupted  CoOp btmri TinyBiomedCLIP K=2 seed 1" in capsys.readouterr().out
    assert sweep.main(sweep_argv(synthetic_btmri, out)) == 0  # no --retry-failed: it resumes
    printed = capsys.readouterr().out
    assert "1 runs: 1 interrupted, 1 to run" in printed and "summary: 1 runs: 1 finished" in printed
    assert "1 of 3 epochs already done" in open(latest_log(run_dir), encoding="utf-8").read()
    ours, theirs = (json.load(open(os.path.join(d, "results.json"))) for d in (run_dir, reference.outputs[0]))
    assert ours["accuracy"] == theirs["accuracy"] and ours["macro_f1"] == theirs["macro_f1"]
    a, b = learned(run_dir), learned(reference.outputs[0])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not os.path.exists(os.path.join(run_dir, "resume.json"))  # gone with resume.pth


def test_a_crashed_run_stays_failed_and_waits_for_retry_failed(synthetic_btmri, tmp_path, monkeypatch, capsys,
                                                               launched):
    out = tmp_path / "out"
    unit = the_unit(synthetic_btmri, out)
    (command,), (run_dir,) = unit.commands, unit.outputs
    stop_after_first_epoch(monkeypatch, "crash")
    with pytest.raises(RuntimeError, match="a bug in epoch 2"):
        train.main(command[2:])
    assert os.path.exists(os.path.join(run_dir, "resume.pth"))  # resumable, yet it crashed
    log = open(latest_log(run_dir), encoding="utf-8").read()
    assert "RuntimeError: a bug in epoch 2" in log and log.rstrip().endswith(f"{CRASH_LINE} (RuntimeError, above)")
    status = run_status(run_dir)
    assert status.state == FAILED and status.reason == "crashed: its log ends on an error (stopped after epoch 2 of 3)"

    assert sweep.main(sweep_argv(synthetic_btmri, out)) == 1
    printed = capsys.readouterr().out
    assert "1 runs: 1 failed, 0 to run" in printed and not launched
    assert "FAILED CoOp btmri TinyBiomedCLIP K=2 seed 1: crashed: its log ends on an error" in printed
    assert sweep.main([*sweep_argv(synthetic_btmri, out), "--retry-failed"]) == 1
    assert launched == [[unit.id]]


def test_a_resume_state_of_other_settings_is_stale_not_resumed(synthetic_btmri, tmp_path, monkeypatch, capsys,
                                                               launched):
    out = tmp_path / "out"
    unit = the_unit(synthetic_btmri, out)
    (command,), (run_dir,) = unit.commands, unit.outputs
    with monkeypatch.context() as m:
        stop_after_first_epoch(m, "preempt")  # the engine's own pre-termination stop
        assert train.main(command[2:]) == preempt.PREEMPTED

    other = f"{FAST} OPTIM.LR 0.5"
    (asked,) = the_unit(synthetic_btmri, out, other).commands
    status = run_status(run_dir, plan.requested_settings(asked))
    assert status.state == STALE and status.differences == ["OPTIM.LR: 0.002 -> 0.5"]
    assert sweep.main(sweep_argv(synthetic_btmri, out, other)) == 1
    printed = capsys.readouterr().out
    assert "1 runs: 1 stale, 0 to run" in printed and not launched
    assert ("STALE  CoOp btmri TinyBiomedCLIP K=2 seed 1: OPTIM.LR: 0.002 -> 0.5 (its resume state (stopped after "
            "epoch 1 of 3) was saved with other settings)") in printed
    assert train.main(asked[2:]) == 2  # train.py --skip-finished says so rather than starting
    err = capsys.readouterr().err
    assert "resume.pth (stopped after epoch 1 of 3) was saved with other settings" in err and "OPTIM.LR" in err

    sweep.main([*sweep_argv(synthetic_btmri, out, other), "--redo-stale"])
    assert launched == [[unit.id]]
    note = tmp_path / "note.txt"
    with open(note, "w", encoding="utf-8") as f:  # what run_unit does before a replacing command
        launch.drop_stale_resume_state(plan.replacing(asked), run_dir, f)
    assert "dropped the resume state (stopped after epoch 1 of 3)" in note.read_text()
    assert not os.path.exists(os.path.join(run_dir, "resume.pth"))

    # With its own settings, a preempted run resumes under train.py --skip-finished.
    with monkeypatch.context() as m:
        stop_after_first_epoch(m, "preempt")
        assert train.main(command[2:]) == preempt.PREEMPTED
    assert run_status(run_dir, plan.requested_settings(command)).state == INTERRUPTED
    capsys.readouterr()
    assert train.main(command[2:]) == 0
    assert f"note: resuming {run_dir} (stopped after epoch 1 of 3)" in capsys.readouterr().out
