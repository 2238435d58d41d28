"""tools/sweep.py: the grid becomes the scripts' own runs, packed, launched, skipped, retried."""

import json
import os
import re

import pytest
import sweep

from engine.registry import TRAINER_REGISTRY

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = "OPTIM.MAX_EPOCH 1 DATALOADER.NUM_WORKERS 0"


def grid(root, out, **over):
    g = {"methods": ["CoOp", "BiomedCoOp"], "datasets": ["btmri"], "shots": [1, 2], "seeds": [1, 2],
         "models": ["TinyBiomedCLIP"], "protocol": "few_shot", "root": root, "output_root": str(out),
         "extra_opts": FAST}
    g.update(over)
    return g


def test_every_method_has_a_script_that_runs_it():
    assert set(TRAINER_REGISTRY.registered_names()) <= set(sweep.METHOD_SCRIPTS)
    for method, (folder, env) in sweep.METHOD_SCRIPTS.items():
        text = open(os.path.join(REPO, "scripts", folder, "few_shot.sh")).read()
        assert re.search(rf"few_shot ({method}|\"\$METHOD\") ", text), method
        if env:
            assert all(key in text for key in env)


def test_the_grid_expands_into_the_scripts_own_commands(tmp_path):
    units = sweep.plan_units(grid("DATA", tmp_path))
    assert len(units) == 2 * 2 * 2  # methods x shots x seeds
    unit = next(u for u in units if u.label == "BiomedCoOp btmri TinyBiomedCLIP K=2 seed 2")
    (argv,) = unit.commands
    assert argv[1].endswith("train.py") and sweep.option(argv, "--trainer") == "BiomedCoOp_TinyBiomedCLIP"
    assert sweep.option(argv, "--config-file").endswith("BiomedCoOp/few_shot/btmri.yaml")
    assert unit.outputs == [str(tmp_path / "btmri/shots_2/BiomedCoOp_TinyBiomedCLIP/nctx4_cscFalse_ctpend/seed2")]
    assert argv[-4:] == FAST.split() and unit.group == "TinyBiomedCLIP/btmri"

    b2n = sweep.plan_units(grid("DATA", tmp_path, protocol="base2new", datasets=["btmri", "busi"], seeds=[1]))
    assert len(b2n) == 2  # BUSI has no base-to-novel split
    assert all(len(u.commands) == 2 and "--eval-only" in u.commands[1] for u in b2n)


def test_packing_fills_jobs_up_to_the_target():
    assert sorted(map(len, sweep.pack([30.0] * 10, 100))) == [1, 3, 3, 3]
    assert sweep.pack([500.0, 10.0, 10.0], 100) == [[0], [1, 2]]  # a long run gets a job of its own


def test_a_grid_file_with_an_unknown_key_is_named(tmp_path, capsys):
    path = tmp_path / "grid.yaml"
    path.write_text("methods: [CoOp]\nmodel: [BiomedCLIP]\n")
    assert sweep.main(["--grid", str(path)]) == 2
    assert "unknown key(s) ['model']" in capsys.readouterr().err


def test_local_sweep_runs_skips_and_retries(synthetic_btmri, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["--root", synthetic_btmri, "--methods", "CoOp", "ZeroShot", "--datasets", "btmri", "--shots", "2",
            "--seeds", "1", "2", "--models", "TinyBiomedCLIP", "--output-root", str(out), "--extra-opts", FAST,
            "--workers", "2"]
    assert sweep.main(base) == 0
    results = sorted(p.relative_to(out).as_posix() for p in out.glob("btmri/**/results.json"))
    assert len(results) == 4 and all(json.load(open(out / r))["num_shots"] == 2 for r in results)
    capsys.readouterr()
    assert sweep.main(base) == 0
    assert "4 runs: 4 finished, 0 to run" in capsys.readouterr().out

    blocked = out / "btmri/shots_2/CoOp_TinyBiomedCLIP/nctx4_cscFalse_ctpend/seed3"
    blocked.parent.mkdir(parents=True, exist_ok=True)
    blocked.write_text("a file where the run folder should be")  # makes that run fail
    with_seed3 = [*base[:base.index("--seeds") + 3], "3", *base[base.index("--seeds") + 3:]]
    assert sweep.main(with_seed3) == 1
    sweep_dir = str(out / "sweeps" / "sweep")
    capsys.readouterr()
    sweep.status(sweep_dir)
    report = capsys.readouterr().out
    assert "6 runs: 5 done, 0 running, 1 failed, 0 pending" in report and "FAILED CoOp btmri" in report
    assert sweep.main(with_seed3) == 0  # a failed run is not retried unless asked
    assert "1 failed before (skipped" in capsys.readouterr().out
    blocked.unlink()
    assert sweep.main([*with_seed3, "--retry-failed"]) == 0
    assert (blocked / "results.json").exists()


def test_submitit_local_executor_runs_packed_jobs(synthetic_btmri, tmp_path):
    pytest.importorskip("submitit")
    out = tmp_path / "out"
    argv = ["--root", synthetic_btmri, "--methods", "ZeroShot", "--datasets", "btmri", "--shots", "2",
            "--seeds", "1", "2", "--models", "TinyBiomedCLIP", "--output-root", str(out), "--extra-opts", FAST,
            "--launcher", "slurm", "--cluster", "local", "--time", "10", "--cpus", "1", "--gpus", "0"]
    assert sweep.main(argv) == 0
    assert len(list(out.glob("btmri/shots_2/ZeroShot_TinyBiomedCLIP/*/seed*/results.json"))) == 2
