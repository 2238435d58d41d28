"""protocol dg in the sweep: its units are scripts/<method>/dg.sh's own train.py commands, the local
launcher runs them into dg.sh's layout, status and the DG table read them; a dataset that is no DG
source is refused in one line naming the key and the valid sources."""

import json
import os
import shlex
import subprocess
import sys

import make_tables
import pytest
import sweep

import train
from sweeps import launch, plan
from sweeps.grid import build_grid, read_grid_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = "OPTIM.MAX_EPOCH 1 FEATURES.TRAIN_VIEWS 1 DATALOADER.NUM_WORKERS 0 TRAIN.REPORT_TO none"
TARGETS = ["brisc", "btmri_p", "btmri_s"]
RUN = "shots_2/CoOp_TinyBiomedCLIP/nctx4_cscFalse_ctpend"


@pytest.fixture(scope="module")
def dg_data(tmp_path_factory) -> str:
    """Synthetic BTMRI and its three targets, as small as the DG tests' own (12 images per class)."""
    from make_synthetic_dataset import write_dataset

    root = tmp_path_factory.mktemp("dg_sweep_data")
    for name in ["BTMRI", "BRISC", "BTMRI-P", "BTMRI-S"]:
        write_dataset(str(root), name, per_class=12, size=32)
    return str(root)


def grid_file(tmp_path, root, out, datasets="btmri"):
    path = tmp_path / "dg.yaml"
    path.write_text(f"protocol: dg\nmethods: CoOp\ndatasets: {datasets}\nshots: 2\nseeds: 1\n"
                    f"models: TinyBiomedCLIP\nroot: {root}\noutput_root: {out}\nextra_opts: {FAST}\n")
    return str(path)


def in_process(argv, env, out) -> int:
    """The launcher's train.py child, run in this process (no Python start-up per run: seconds each)."""
    assert argv[1] == os.path.join(REPO, "train.py"), argv
    return train.main(argv[2:])


def test_a_dg_grid_runs_what_dg_sh_runs_and_the_dg_table_reads_it(dg_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(launch, "_run_child", in_process)
    monkeypatch.setattr(launch, "encode_command", lambda plan_path, group: ["true"])  # the runs encode their own
    out = tmp_path / "out"
    path = grid_file(tmp_path, dg_data, out)
    (unit,) = plan.plan_units(build_grid(read_grid_file(path), {}, path))
    env = {**os.environ, "PRINT_RUNS": "1", "SEEDS": "1", "OUTPUT_ROOT": str(out), "EXTRA_OPTS": FAST,
           "PYTHON": sys.executable}
    printed = subprocess.run(["bash", "scripts/coop/dg.sh", dg_data, "btmri", "2", "TinyBiomedCLIP"], cwd=REPO,
                             env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    assert unit.commands == [shlex.split(line) for line in printed.splitlines() if line.strip()]
    source = str(out / "btmri" / RUN / "seed1")
    targets = [str(out / t / f"{RUN}_from_btmri" / "seed1") for t in TARGETS]
    assert unit.outputs == [source, *targets] and unit.label == "CoOp btmri TinyBiomedCLIP DG K=2 seed 1"

    assert sweep.main(["--grid", path]) == 0
    assert "summary: 1 runs: 1 finished" in capsys.readouterr().out
    for target, folder in zip(TARGETS, targets):
        record = json.load(open(os.path.join(folder, "results.json")))
        assert record["protocol"] == "dg" and record["source"] == "BTMRI" and record["eval_only"]
        assert record["config"]["TEST.DATASET"] == target
    assert sweep.main(["status", str(out / "sweeps" / "sweep")]) == 0
    assert "1 runs: 1 finished, 0 stale, 0 failed" in capsys.readouterr().out

    assert make_tables.main([str(out)]) == 0
    section = capsys.readouterr().out.split("== Domain generalisation from BTMRI", 1)[1]
    header, row = [line for line in section.splitlines() if line.startswith(("Method", "CoOp"))][:2]
    assert header.split()[-3:] == ["BRISC", "BTMRI-P", "BTMRI-S"]
    assert row.split()[:3] == ["CoOp", "TinyBiomedCLIP", "2"] and row.count("(1)") == 6  # ID, OOD, HM, 3 targets


def test_a_dg_grid_on_a_dataset_without_targets_is_one_line(tmp_path, capsys):
    path = grid_file(tmp_path, tmp_path, tmp_path / "out", datasets="[btmri, chmnist]")
    assert sweep.main(["--grid", path, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {path}: datasets: 'chmnist' has no domain-generalisation targets, so protocol dg cannot "
                   "run it; valid sources: btmri busi (docs/domain_generalization.md)\n")
    assert not (tmp_path / "out").exists()


def test_under_torchrun_a_dg_unit_trains_its_source_in_n_processes_and_evaluates_in_one(tmp_path):
    """--gpus-per-job N (local or SLURM): as for the other protocols, only the pixel-path training runs
    under torchrun; the target evaluations stay one process."""
    g = build_grid({}, {"protocol": "dg", "methods": ["CLIPLoRA"], "datasets": ["busi"], "shots": [2], "seeds": [1],
                        "models": ["TinyBiomedCLIP"], "root": str(tmp_path), "output_root": str(tmp_path / "out")})
    (unit,) = plan.plan_units(g)
    assert len(unit.commands) == 4 and unit.group == "TinyBiomedCLIP/busi"  # BUSI, then BUID, BUSBRA, UDIAT
    wrapped = [launch.train_command(c, 2) for c in unit.commands]
    assert wrapped[0][1:3] == ["-m", "torch.distributed.run"] and wrapped[1:] == unit.commands[1:]
