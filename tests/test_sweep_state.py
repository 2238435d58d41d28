"""The sweep's notion of done is the engine's (stale runs are named, not finished), one plan file per
submission, the encoding job builds no trainer, and a user's mistakes get one line."""

import json
import os
import re
import subprocess
import sys

import pytest
import sweep

import train
from engine import trainer as engine_trainer
from engine.errors import UserError
from sweeps import launch, plan, state
from sweeps.encode import encode_group
from sweeps.grid import build_grid, read_grid_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = "OPTIM.MAX_EPOCH 1 DATALOADER.NUM_WORKERS 0"


def argv_for(out, *more, extra=FAST):
    return ["--root", "DATA", "--methods", "CoOp", "--datasets", "btmri", "--shots", "2", "--seeds", "1",
            "--models", "TinyBiomedCLIP", "--output-root", str(out), "--extra-opts", extra, *more]


def finish(unit, **changed):
    """A results.json in the unit's run folder recording its requested settings, with `changed` ones."""
    (argv,), (out,) = unit.commands, unit.outputs
    os.makedirs(out, exist_ok=True)
    config = {**plan.requested_settings(argv), **changed}
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"method": "CoOp", "accuracy": 50.0, "config": config}, f)


@pytest.fixture
def launched(monkeypatch):
    """Launches recorded instead of run: [(plan path, [unit ids], [their commands])]."""
    calls = []

    def record(plan_path, units, workers, gpus, nproc=0):
        calls.append((plan_path, [u.id for u in units], [u.commands for u in units]))
        return []

    monkeypatch.setattr(launch, "launch_local", record)
    return calls


def test_a_run_made_with_other_settings_is_stale_not_finished(tmp_path, capsys, launched):
    out = tmp_path / "out"
    (unit,) = plan.plan_units(build_grid({}, {"root": "DATA", "methods": ["CoOp"], "datasets": ["btmri"], "shots": [2],
                                              "seeds": [1], "models": ["TinyBiomedCLIP"], "output_root": str(out),
                                              "extra_opts": FAST}))
    finish(unit, **{"OPTIM.MAX_EPOCH": 3})
    assert sweep.main(argv_for(out)) == 1  # the grid asked for is not there
    printed = capsys.readouterr().out
    assert "1 runs: 1 stale, 0 to run" in printed and "finished" not in printed.split("summary:")[0]
    assert "STALE  CoOp btmri TinyBiomedCLIP K=2 seed 1: OPTIM.MAX_EPOCH: 3 -> 1" in printed
    assert "--redo-stale replaces them" in printed and not launched
    assert sweep.main(["status", str(out / "sweeps" / "sweep")]) == 0
    assert "1 runs: 0 finished, 1 stale, 0 failed, 0 running, 0 pending" in capsys.readouterr().out

    sweep.main(argv_for(out, "--redo-stale"))  # replaces the stale run: its command drops --skip-finished
    ((plan_path, ids, ((command,),)),) = launched
    assert ids == [unit.id] and "--skip-finished" not in command and "--skip-finished" in unit.commands[0]
    assert state.read_plan(plan_path)["units"][0].commands == [command]

    finish(unit)  # now made with exactly the requested settings
    capsys.readouterr()
    assert sweep.main(argv_for(out)) == 0
    assert "1 runs: 1 finished, 0 to run" in capsys.readouterr().out and len(launched) == 1


def test_each_submission_has_its_own_plan_and_a_job_reads_its_own(tmp_path, launched, monkeypatch):
    out = tmp_path / "out"
    assert sweep.main(argv_for(out, "--seeds", "1", "2")) == 1
    assert sweep.main(argv_for(out)) == 1  # a later, smaller grid into the same sweep folder
    (first, first_ids, _), (second, second_ids, _) = launched
    assert first != second and len(first_ids) == 2 and len(second_ids) == 1
    assert sorted(os.listdir(os.path.dirname(first))) == sorted(map(os.path.basename, (first, second)))  # no temp file
    assert state.latest_plan(str(out / "sweeps" / "sweep")) == second
    ran = []
    monkeypatch.setattr(launch, "run_unit", lambda sweep_dir, unit, gpu=None, nproc=1: ran.append(unit.id) or True)
    assert launch.run_pack(first, first_ids) == 0  # the queued job of the larger grid still finds its units
    assert ran == first_ids


def test_grid_scalars_misspelt_names_and_a_read_only_sweep_folder_get_one_line(tmp_path, capsys):
    path = tmp_path / "grid.yaml"
    path.write_text("methods: CoOp\ndatasets: btmri\nshots: 1\nseeds: 2\nmodels: TinyBiomedCLIP\nroot: DATA\n")
    g = build_grid(read_grid_file(str(path)), {"output_root": str(tmp_path / "out")})
    (unit,) = plan.plan_units(g)
    assert unit.label == "CoOp btmri TinyBiomedCLIP K=1 seed 2"

    assert sweep.main(argv_for(tmp_path, "--models", "TinyBiomedCLIPP", "--dry-run")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model 'TinyBiomedCLIPP' (did you mean TinyBiomedCLIP?)")
    assert err.count("\n") == 1
    path.write_text("methods: [CoOp]\nshots: [one]\n")
    with pytest.raises(UserError, match="shots are whole numbers; got 'one'"):
        build_grid(read_grid_file(str(path)), {})

    blocker = tmp_path / "a_file"
    blocker.write_text("")  # a folder that cannot be written (as even root cannot write under a file)
    assert sweep.main(argv_for(tmp_path / "out", "--sweep-dir", str(blocker / "sweep"))) == 2
    err = capsys.readouterr().err
    assert "cannot write the sweep's plan in" in err and "--sweep-dir a folder you can write to" in err
    assert err.count("\n") == 1


def test_the_example_grid_the_readme_shows_parses_and_plans(tmp_path, capsys):
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    files = set(re.findall(r"tools/sweep\.py --grid (\S+)", readme))
    assert files == {"configs/sweeps/example_grid.yaml"}
    path = os.path.join(REPO, *files)
    g = build_grid(read_grid_file(path), {"output_root": str(tmp_path)})
    units = plan.plan_units(g)
    n = len(g["methods"]) * len(g["datasets"]) * len(g["shots"]) * len(g["seeds"])
    assert len(units) == n > 0
    assert all(u.commands and os.path.isfile(plan.option(u.commands[0], "--config-file")) for u in units)
    assert sweep.main(["--grid", path, "--dry-run", "--output-root", str(tmp_path)]) == 0  # the README's dry run
    printed = capsys.readouterr().out
    assert f"{n} units" in printed and f"{n} runs (0 already finished)" in printed
    # the header says what the lines after it are: the units' states and names, not train.py commands
    assert "their train.py commands:" not in printed
    assert "each unit's state (finished, stale, failed, running, pending, interrupted) and name:\n  pending " in printed
    assert not (tmp_path / "sweeps").exists()  # a dry run writes nothing


def test_the_encoding_job_fills_the_cache_the_runs_read(synthetic_btmri, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    g = build_grid({}, {"root": synthetic_btmri, "methods": ["CLIPSVD", "CoOp"], "datasets": ["btmri"], "shots": [2],
                        "seeds": [1], "models": ["TinyBiomedCLIP"], "output_root": str(tmp_path / "out"),
                        "extra_opts": f"OPTIM.MAX_EPOCH 2 DATALOADER.NUM_WORKERS 0 FEATURES.CACHE_DIR {cache}"})
    units = plan.plan_units(g)  # CLIP-SVD first: it used to adapt the shared backbone before CoOp encoded
    plan_path = state.write_plan(str(tmp_path / "sweep"), g, units, [u.id for u in units])

    def no_trainer(self, cfg):
        raise AssertionError("the encoding job built a trainer")

    with monkeypatch.context() as m:
        m.setattr(engine_trainer.TrainerX, "__init__", no_trainer)
        assert encode_group(plan_path, "TinyBiomedCLIP/btmri") == 1  # CoOp's run; CLIP-SVD reads pixels
    assert len(list(cache.glob("*/train-*-v1.pt"))) == 1  # two views (two epochs), under one backbone key
    written = {p: p.stat().st_mtime_ns for p in cache.rglob("*.pt")}

    coop = next(u for u in units if u.label.startswith("CoOp"))
    assert train.main(coop.commands[0][2:]) == 0
    log = open(os.path.join(coop.outputs[0], "log.txt"), encoding="utf-8").read()
    assert "Encoding" not in log  # every feature the run read came from the job's cache,
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*.pt")} == written  # which the run left as it was


def test_a_failure_the_sweep_recorded_counts_for_the_same_request_only(tmp_path):
    g = build_grid({}, {"root": "DATA", "methods": ["CoOp"], "datasets": ["btmri"], "shots": [2], "seeds": [1],
                        "models": ["TinyBiomedCLIP"], "output_root": str(tmp_path / "out"), "extra_opts": FAST})
    (unit,) = plan.plan_units(g)
    sweep_dir = str(tmp_path / "sweep")
    log = state.log_path(sweep_dir, unit.id)
    os.makedirs(os.path.dirname(log))
    with open(log, "w") as f:
        f.write("error: something the run could not get past\n")
    state.write_state(sweep_dir, unit.id, state="failed", returncode=2, log=log, commands=state.same_run(unit.commands))
    failed = state.unit_status(sweep_dir, unit)
    assert failed.state == "failed" and failed.logs == [log] and failed.log_tail == [open(log).read().strip()]
    (other,) = plan.plan_units({**g, "extra_opts": "OPTIM.MAX_EPOCH 3"})  # the same unit id, other settings
    assert other.id == unit.id and state.unit_status(sweep_dir, other).state == "pending"


def test_a_dry_run_piped_into_a_reader_that_stops_prints_no_traceback(tmp_path):
    """`tools/sweep.py ... --dry-run | head`: the listing stops quietly when its reader does."""
    tool = os.path.join(REPO, "tools", "sweep.py")
    line = (f"{sys.executable} {tool} --root DATA --methods CoOp --datasets btmri --shots 2 --seeds 1 "
            f"--models TinyBiomedCLIP --output-root {tmp_path} --dry-run | true")
    proc = subprocess.run(["bash", "-c", line], capture_output=True, text=True, cwd=REPO)
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
