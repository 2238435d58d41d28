"""Reliability II: one writer per run folder, no silent cross-backbone loads, no silent missing classes,
no trace of runs that never started, and one line for a full disk or a Ctrl-C."""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest

import train
from engine.errors import UserError
from engine.run_lock import LOCK_FILE, RunLock, lock_holder

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def args_for(root, out, *extra, trainer="CoOp_TinyBiomedCLIP", shots=2, epochs=2, flags=()):
    return [
        "--root", str(root), "--seed", "1", "--trainer", trainer, *flags,
        "--dataset-config-file", os.path.join(REPO, "configs/datasets/btmri.yaml"),
        "--output-dir", str(out), "DATASET.NUM_SHOTS", str(shots), "OPTIM.MAX_EPOCH", str(epochs),
        "DATALOADER.NUM_WORKERS", "0", *extra,
    ]


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ----- item 3: one writer per run folder --------------------------------------------------------------
def test_lock_names_the_live_holder_and_is_released_on_exit(tmp_path):
    run_dir = tmp_path / "run"
    assert lock_holder(run_dir) is None
    with RunLock(run_dir, command="python train.py A"):
        holder = lock_holder(run_dir)
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        assert holder["command"] == "python train.py A" and holder["started"]
        with pytest.raises(UserError) as err:
            RunLock(run_dir, command="python train.py B").acquire()
        message = str(err.value)
        assert f"pid {os.getpid()}" in message and socket.gethostname() in message
        assert "python train.py A" in message and "--wait-for-lock" in message
    assert lock_holder(run_dir) is None and not (run_dir / LOCK_FILE).exists()
    assert not run_dir.exists()  # the lock made the folder, the run wrote nothing: no trace


def test_output_folder_that_cannot_be_made_is_one_line(tmp_path):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(UserError, match="Cannot create the output folder .*--output-dir"):
        RunLock(tmp_path / "a_file" / "run").acquire()


def test_lock_is_released_when_the_run_raises(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(RuntimeError):
        with RunLock(run_dir):
            raise RuntimeError("boom")
    assert not (run_dir / LOCK_FILE).exists() and run_dir.is_dir()  # an existing folder stays


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    stale = {"pid": dead_pid(), "host": socket.gethostname(), "started": "2026-01-01T00:00:00+00:00",
             "command": "killed"}
    (run_dir / LOCK_FILE).write_text(json.dumps(stale))
    assert lock_holder(run_dir) is None
    with RunLock(run_dir):
        assert lock_holder(run_dir)["pid"] == os.getpid()
    other_host = {**stale, "host": socket.gethostname() + "-elsewhere"}  # cannot be checked: counts as live
    (run_dir / LOCK_FILE).write_text(json.dumps(other_host))
    assert lock_holder(run_dir)["command"] == "killed"
    with pytest.raises(UserError, match="delete .*run.lock"):
        RunLock(run_dir).acquire()


def hold_lock(run_dir, seconds: float, command: str = "python train.py FIRST") -> subprocess.Popen:
    """Another process holding run_dir's lock for `seconds`; returns once it holds it."""
    code = ("import sys, time; sys.path.insert(0, sys.argv[1]); from engine.run_lock import RunLock\n"
            "with RunLock(sys.argv[2], command=sys.argv[3]):\n"
            "    print('locked', flush=True); time.sleep(float(sys.argv[4]))\n")
    proc = subprocess.Popen([sys.executable, "-c", code, REPO, str(run_dir), command, str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_is_released_on_sigterm(tmp_path):
    run_dir = tmp_path / "run"
    proc = hold_lock(run_dir, 60)
    try:
        assert lock_holder(run_dir)["pid"] == proc.pid
        proc.terminate()
        assert proc.wait(timeout=30) == 143
    finally:
        proc.kill()
    assert lock_holder(run_dir) is None and not (run_dir / LOCK_FILE).exists()


def test_second_run_on_a_busy_folder_stops_in_one_line_or_waits(synthetic_btmri, tmp_path, capsys):
    out = tmp_path / "run"
    holder = hold_lock(out, 4)
    try:
        assert train.main(args_for(synthetic_btmri, out)) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 2 and err.startswith("error: ")
        assert f"pid {holder.pid}" in err and "python train.py FIRST" in err and "since" in err
        assert not (out / "log.txt").exists() and not (out / "results.json").exists()
        assert train.main(args_for(synthetic_btmri, out, flags=["--wait-for-lock"])) == 0
        assert holder.poll() is not None  # it ran once the first one had let go
        assert "waiting for the run holding" in capsys.readouterr().out
        assert (out / "results.json").exists() and not (out / LOCK_FILE).exists()
    finally:
        holder.kill()
        holder.wait()


def make_data(root, per_class: int = 6) -> str:
    """A private synthetic BTMRI (tests here edit its split)."""
    from make_synthetic_dataset import write_dataset

    write_dataset(str(root), "BTMRI", per_class=per_class, size=16)
    return str(root)


# ----- item 1: a checkpoint loads only into the method and backbone it was trained with ---------------
def test_checkpoint_of_another_backbone_is_refused_naming_both(synthetic_btmri, tmp_path, capsys):
    import torch

    src = tmp_path / "pmc"
    assert train.main(args_for(synthetic_btmri, src, trainer="CoOp_TinyPMCCLIP", epochs=1)) == 0
    ckpt_path = src / "prompt_learner" / "model.pth.tar-1"
    saved = torch.load(ckpt_path, weights_only=False)["trained_with"]
    assert saved == {"method": "CoOp", "backbone": "TinyPMCCLIP", "model": "TinyPMCCLIP"}
    capsys.readouterr()

    def evaluate(out, *extra, trainer="CoOp_TinyBiomedCLIP"):
        return train.main(args_for(synthetic_btmri, out, *extra, trainer=trainer, epochs=1,
                                   flags=["--eval-only", "--model-dir", str(src), "--load-epoch", "1"]))

    assert evaluate(tmp_path / "swapped") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "TinyPMCCLIP" in err and "TinyBiomedCLIP" in err
    assert "MODEL.ALLOW_CHECKPOINT_MISMATCH True" in err
    assert not (tmp_path / "swapped").exists()  # refused before anything was written
    assert evaluate(tmp_path / "other_method", trainer="KgCoOp_TinyPMCCLIP") == 2
    assert "method CoOp (this run: KgCoOp)" in capsys.readouterr().err

    assert evaluate(tmp_path / "deliberate", "MODEL.ALLOW_CHECKPOINT_MISMATCH", "True") == 0
    assert "loaded anyway" in (tmp_path / "deliberate" / "log.txt").read_text()
    assert json.load(open(tmp_path / "deliberate" / "results.json"))["backbone"] == "TinyBiomedCLIP"

    # tools/predict.py reads a run through the same load path: a swapped checkpoint file is refused too.
    import shutil

    from engine.predict import Predictor

    own = tmp_path / "biomed"
    assert train.main(args_for(synthetic_btmri, own, epochs=1)) == 0
    shutil.copy(ckpt_path, own / "prompt_learner" / "model.pth.tar-1")
    with pytest.raises(UserError, match="TinyPMCCLIP .this run: TinyBiomedCLIP"):
        Predictor(str(own), root=synthetic_btmri)

    # A checkpoint from before the record (the authors' released ones) still loads, with a note.
    state = torch.load(ckpt_path, weights_only=False)
    del state["trained_with"]
    torch.save(state, ckpt_path)
    assert evaluate(tmp_path / "old", trainer="CoOp_TinyPMCCLIP") == 0
    assert "does not record the method and backbone" in (tmp_path / "old" / "log.txt").read_text()


# ----- item 2: every class needs a training image ------------------------------------------------------
def test_class_without_training_images_stops_naming_it(tmp_path, capsys):
    from engine.utils import read_json, write_json

    data = make_data(tmp_path / "data")
    split_path = os.path.join(data, "BTMRI", "split_BTMRI.json")
    split = read_json(split_path)
    gone = split["train"][0][2] if split["train"][0][1] == 0 else next(r[2] for r in split["train"] if r[1] == 0)
    split["train"] = [row for row in split["train"] if row[1] != 0]  # a hand-edited split
    write_json(split, split_path)
    out = tmp_path / "run"
    assert train.main(args_for(data, out)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and f"0 '{gone}'" in err and "no training image" in err
    assert "tools/check_data.py" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_classes_without_training_images_rule():
    from engine.data import classes_without_training_images

    assert classes_without_training_images([(0, "a"), (1, "b")], [(1, "b"), (0, "a")]) == []
    assert classes_without_training_images([(0, "a")], [(2, "c")]) == [(1, ""), (2, "c")]
    assert classes_without_training_images([(1, "b")], []) == [(0, "")]  # a gap in the labels


# ----- item 4: a full disk is named, with the sizes, and nothing is half-written -------------------------
class _FullDisk:
    """A file object whose writes fail as on a full disk."""

    def __init__(self, fd, *args, **kwargs):
        os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_on_a_json_write_names_the_folder_and_sizes(tmp_path, monkeypatch):
    from engine import utils

    target = tmp_path / "results.json"
    target.write_text('{"old": 1}')
    monkeypatch.setattr(utils.os, "fdopen", _FullDisk)
    with pytest.raises(UserError) as err:
        utils.write_json({"accuracy": 1.0}, target)
    message = str(err.value)
    assert message.startswith(f"no space left on {tmp_path}") and "results.json needs about" in message
    assert "free there" in message and "--output-dir" in message
    assert isinstance(err.value, OSError)  # code that carries on without an optional cache still does
    assert target.read_text() == '{"old": 1}' and [p.name for p in tmp_path.iterdir()] == ["results.json"]


@pytest.mark.parametrize("torch_error", [
    "[enforce fail at inline_container.cc:672] . unexpected pos 4544 vs 4432",
    "basic_ios::clear: iostream error",
])
def test_full_disk_under_torch_save_is_one_line_not_a_torch_traceback(tmp_path, monkeypatch, torch_error):
    import shutil

    import torch

    from engine import utils

    def failing_save(obj, path):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise RuntimeError(torch_error)

    monkeypatch.setattr(torch, "save", failing_save)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10 << 30, 10 << 30, 1 << 20))
    with pytest.raises(UserError) as err:
        utils.torch_save_atomic({"w": torch.zeros(1 << 20)}, tmp_path / "model.pth.tar-1")
    message = str(err.value)
    assert message.startswith(f"no space left on {tmp_path}") and "4.0 MB" in message and "1.0 MB is free" in message
    assert list(tmp_path.iterdir()) == []  # no partial file left


def test_full_disk_during_a_run_ends_in_one_line_and_releases_the_folder(synthetic_btmri, tmp_path, monkeypatch,
                                                                          capsys):
    import torch

    real_save = torch.save

    def full_for_checkpoints(obj, path):
        if "model.pth.tar" in str(path) or "resume" in str(path):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")
        real_save(obj, path)

    monkeypatch.setattr(torch, "save", full_for_checkpoints)
    out = tmp_path / "run"
    assert train.main(args_for(synthetic_btmri, out)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "resume.pth" in err and "Traceback" not in err
    assert not (out / LOCK_FILE).exists() and not [p for p in out.iterdir() if p.name.endswith(".tmp")]


# ----- item 6: a run that never started leaves no trace in its folder ------------------------------------
def test_run_stopped_by_missing_weights_leaves_no_trace(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf_home"))
    data = make_data(tmp_path / "data")
    out = tmp_path / "output" / "btmri" / "shots_2" / "CoOp_BiomedCLIP" / "seed1"
    assert train.main(args_for(data, out, trainer="CoOp_BiomedCLIP")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "HF_HUB_OFFLINE=1" in err
    assert not (tmp_path / "output").exists()  # no log.txt that tables would count as a failed run
    assert not os.path.exists(os.path.join(data, "BTMRI", "split_fewshot"))  # nor a few-shot split


# ----- item 8: Ctrl-C during training ----------------------------------------------------------------------
def test_ctrl_c_during_training_is_one_line_with_status_130(synthetic_btmri, tmp_path, monkeypatch, capsys):
    from engine.trainer import TrainerX

    original = TrainerX.after_epoch

    def ctrl_c_in_second_epoch(self):
        if self.epoch == 1:
            raise KeyboardInterrupt
        original(self)

    monkeypatch.setattr(TrainerX, "after_epoch", ctrl_c_in_second_epoch)
    out = tmp_path / "run"
    assert train.main(args_for(synthetic_btmri, out, epochs=3)) == 130
    err = capsys.readouterr().err.strip()
    assert err == "interrupted at epoch 2; run the same command again to resume"
    assert (out / "resume.pth").exists() and not (out / LOCK_FILE).exists()
    monkeypatch.setattr(TrainerX, "after_epoch", original)
    assert train.main(args_for(synthetic_btmri, out, epochs=3)) == 0
    assert "Resuming from" in "".join(p.read_text() for p in out.glob("log.txt*"))


def test_sigterm_during_training_is_one_line_and_releases_the_folder(synthetic_btmri, tmp_path, monkeypatch,
                                                                     capsys):
    import signal

    from engine.trainer import TrainerX

    original = TrainerX.after_epoch
    before = signal.getsignal(signal.SIGTERM)

    def terminated_in_second_epoch(self):
        if self.epoch == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # what a cluster sends at its time limit
        original(self)

    monkeypatch.setattr(TrainerX, "after_epoch", terminated_in_second_epoch)
    out = tmp_path / "run"
    assert train.main(args_for(synthetic_btmri, out, epochs=3)) == 143
    assert capsys.readouterr().err.strip() == "terminated at epoch 2; run the same command again to resume"
    assert not (out / LOCK_FILE).exists() and signal.getsignal(signal.SIGTERM) == before


# ----- item 9: benchmarks/run_all.py --help answers without torch ------------------------------------------
def test_run_all_help_does_not_import_torch():
    script = os.path.join(REPO, "benchmarks", "run_all.py")
    code = (f"import runpy, sys\nsys.argv = [{script!r}, '--help']\n"
            f"try:\n    runpy.run_path({script!r}, run_name='__main__')\n"
            "except SystemExit:\n    pass\nprint('torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert "usage: run_all.py" in done.stdout and done.stdout.strip().splitlines()[-1] == "False", done.stderr


# ----- item 13: LP++'s negative initial alpha on a twin is explained -----------------------------------------
def test_lpp_says_why_a_twin_starts_backwards(synthetic_btmri, tmp_path):
    out = tmp_path / "lpp"
    argv = args_for(synthetic_btmri, out, "TRAIN.PRINT_FREQ", "1", trainer="LPPlusPlus_TinyBiomedCLIP", epochs=1)
    argv[argv.index("--dataset-config-file"):argv.index("--dataset-config-file")] = [
        "--config-file", os.path.join(REPO, "configs/trainers/LPPlusPlus/few_shot.yaml")]
    assert train.main(argv) == 0
    log = (out / "log.txt").read_text()
    alpha = float(log.split("initial alpha ", 1)[1].split()[0])
    assert alpha < 0  # the twin's images are anti-aligned with their own class's text
    assert "note: LP++'s initial alpha is negative" in log and "docs/offline.md" in log


def test_readme_names_the_config_layout_of_every_methods_scripts():
    """Every config a method's scripts pass exists and is of a layout README's Methods section describes."""
    import glob
    import re

    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    methods = readme.split("## Methods", 1)[1].split("\n## ", 1)[0]
    layouts = {"few_shot": "few_shot/", "base_to_novel": "base_to_novel/", "vit_b16.yaml": "vit_b16.yaml",
               "vit_b16_base2new.yaml": "vit_b16_base2new.yaml", "few_shot.yaml": "few_shot.yaml",
               "default.yaml": "default.yaml"}
    seen = set()
    for script in glob.glob(os.path.join(REPO, "scripts", "*", "*.sh")):
        for path in re.findall(r"configs/trainers/(\w+)/([\w.]+)", open(script, encoding="utf-8").read()):
            method, tail = path
            target = os.path.join(REPO, "configs", "trainers", method, tail)
            assert tail in layouts, f"{script}: {method}/{tail} is a layout README does not describe"
            assert os.path.isfile(target) or os.path.isfile(os.path.join(target, "default.yaml")), target
            seen.add(tail)
    for tail in seen:
        assert f"`{layouts[tail]}" in methods, tail


def test_readme_lists_the_new_messages():
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    section = readme.split("## When something goes wrong", 1)[1].split("\n## ", 1)[0]
    sources = "".join(open(os.path.join(REPO, p), encoding="utf-8").read() for p in (
        "train.py", "engine/run_lock.py", "engine/trainer.py", "engine/data.py", "engine/utils.py",
        "trainers/linear_probe.py"))
    for in_code, in_readme in [
        ("is in use by another run", "is in use by another run"),
        ("; run the same command again to resume", "interrupted at epoch E; run the same command again to resume"),
        ("was trained with {what}", "was trained with model M (this run: N)"),
        ("have no training image in this run", "have no training image in this run"),
        ("no space left on {folder}", "no space left on FOLDER"),
        ("LP++'s initial alpha is negative", "LP++'s initial alpha is negative"),
    ]:
        assert in_code in sources, in_code  # the message still exists ...
        assert in_readme in section, in_readme  # ... and the README says what to do about it


def test_full_disk_under_log_txt_is_said_once(tmp_path, capsys):
    from engine.utils import LOGGER_NAME, open_log_file, setup_logger

    logger = setup_logger(str(tmp_path), defer=True)
    logger.info("held line")
    open_log_file(str(tmp_path))
    handler = next(h for h in logging.getLogger(LOGGER_NAME).handlers if hasattr(h, "baseFilename"))

    def full(text):
        raise OSError(errno.ENOSPC, "No space left on device")

    handler.stream.write = full
    for i in range(3):
        logger.info(f"line {i}")
    captured = capsys.readouterr()
    err = captured.err
    assert "Logging error" not in err and "Traceback" not in err
    assert err.count("cannot be written (no space left on") == 1 and "terminal only" in err
    assert "line 2" in captured.out  # the terminal keeps getting the lines
    setup_logger(None)


def test_lock_being_written_counts_as_held_and_old_debris_does_not(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / LOCK_FILE).write_text("")  # a lock half-written just now
    assert lock_holder(run_dir) is not None
    old = time.time() - 60
    os.utime(run_dir / LOCK_FILE, (old, old))  # the same a minute later: debris of a crash
    assert lock_holder(run_dir) is None
    with RunLock(run_dir):
        assert lock_holder(run_dir)["pid"] == os.getpid()
