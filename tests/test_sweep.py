"""tools/sweep.py over the sweeps package: the grid becomes the scripts' own runs, packed, launched,
skipped, retried, summarised."""

import json
import os
import re

import pytest
import sweep

from engine.registry import TRAINER_REGISTRY
from sweeps import plan
from sweeps.grid import method_scripts

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = "OPTIM.MAX_EPOCH 1 DATALOADER.NUM_WORKERS 0"


def grid(root, out, **over):
    g = {"methods": ["CoOp", "BiomedCoOp"], "datasets": ["btmri"], "shots": [1, 2], "seeds": [1, 2],
         "models": ["TinyBiomedCLIP"], "protocol": "few_shot", "root": root, "output_root": str(out),
         "extra_opts": FAST}
    g.update(over)
    return g


def test_every_method_has_a_script_that_runs_it():
    assert set(TRAINER_REGISTRY.registered_names()) <= set(method_scripts())
    for method, (folder, env) in method_scripts().items():
        text = open(os.path.join(REPO, "scripts", folder, "few_shot.sh")).read()
        assert re.search(rf"few_shot ({method}|\"\$METHOD\") ", text), method
        if env:
            assert all(key in text for key in env)


def test_the_grid_expands_into_the_scripts_own_commands(tmp_path):
    units = plan.plan_units(grid("DATA", tmp_path))
    assert len(units) == 2 * 2 * 2  # methods x shots x seeds
    unit = next(u for u in units if u.label == "BiomedCoOp btmri TinyBiomedCLIP K=2 seed 2")
    (argv,) = unit.commands
    assert argv[1].endswith("train.py") and plan.option(argv, "--trainer") == "BiomedCoOp_TinyBiomedCLIP"
    assert plan.option(argv, "--config-file").endswith("BiomedCoOp/few_shot/btmri.yaml")
    assert plan.option(argv, "--seed") == "2"
    assert unit.outputs == [str(tmp_path / "btmri/shots_2/BiomedCoOp_TinyBiomedCLIP/nctx4_cscFalse_ctpend/seed2")]
    assert argv[-4:] == FAST.split() and unit.group == "TinyBiomedCLIP/btmri"

    notes = []
    b2n = plan.plan_units(grid("DATA", tmp_path, protocol="base2new", datasets=["btmri", "busi"], seeds=[1]), notes)
    assert len(b2n) == 2 and notes == ["BUSI has no base-to-novel split; skipped"]
    assert all(len(u.commands) == 2 and "--eval-only" in u.commands[1] for u in b2n)


def test_packing_fills_jobs_up_to_the_target():
    assert sorted(map(len, plan.pack([30.0] * 10, 100))) == [1, 3, 3, 3]
    assert plan.pack([500.0, 10.0, 10.0], 100) == [[0], [1, 2]]  # a long run gets a job of its own


def test_a_grid_file_with_an_unknown_key_is_named(tmp_path, capsys):
    path = tmp_path / "grid.yaml"
    path.write_text("methods: [CoOp]\nmodel: [BiomedCLIP]\n")
    assert sweep.main(["--grid", str(path)]) == 2
    assert "unknown key(s) ['model']" in capsys.readouterr().err


def test_local_sweep_runs_skips_retries_and_sums_up(synthetic_btmri, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["--root", synthetic_btmri, "--methods", "CoOp", "--datasets", "btmri", "--shots", "2", "--models",
            "TinyBiomedCLIP", "--output-root", str(out), "--extra-opts", FAST, "--workers", "2", "--seeds", "1"]
    assert sweep.main(base) == 0
    (result,) = out.glob("btmri/**/results.json")
    assert json.load(open(result))["num_shots"] == 2
    assert "summary: 1 runs: 1 finished, 0 stale, 0 failed" in capsys.readouterr().out
    assert sweep.main(base) == 0
    assert "1 runs: 1 finished, 0 to run" in capsys.readouterr().out

    blocked = out / "btmri/shots_2/CoOp_TinyBiomedCLIP/nctx4_cscFalse_ctpend/seed2"
    blocked.write_text("a file where the run folder should be")  # makes that run fail
    assert sweep.main([*base, "2"]) == 1  # a run failed: the sweep says so in its exit status
    sweep_dir = str(out / "sweeps" / "sweep")
    summary = capsys.readouterr().out
    assert "summary: 2 runs: 1 finished, 0 stale, 1 failed" in summary
    assert f"FAILED CoOp btmri TinyBiomedCLIP K=2 seed 2: exit status 2 (log: {sweep_dir}/logs/" in summary
    assert sweep.main(["status", sweep_dir]) == 0
    report = capsys.readouterr().out
    assert "2 runs: 1 finished, 0 stale, 1 failed, 0 running, 0 pending" in report and "FAILED CoOp btmri" in report
    assert sweep.main([*base, "2"]) == 1  # a failed run is not retried unless asked
    assert "1 finished, 1 failed, 0 to run" in capsys.readouterr().out
    blocked.unlink()
    assert sweep.main([*base, "2", "--retry-failed"]) == 0
    assert (blocked / "results.json").exists()


def test_submitit_local_executor_runs_packed_jobs(synthetic_btmri, tmp_path):
    pytest.importorskip("submitit")
    out = tmp_path / "out"
    argv = ["--root", synthetic_btmri, "--methods", "ZeroShot", "--datasets", "btmri", "--shots", "2",
            "--seeds", "1", "2", "--models", "TinyBiomedCLIP", "--output-root", str(out), "--extra-opts", FAST,
            "--launcher", "slurm", "--cluster", "local", "--time", "10", "--cpus", "1", "--gpus", "0"]
    assert sweep.main(argv) == 0
    assert len(list(out.glob("btmri/shots_2/ZeroShot_TinyBiomedCLIP/*/seed*/results.json"))) == 2
