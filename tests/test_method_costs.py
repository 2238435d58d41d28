"""The per-method cost section (benchmarks/bench_methods.py, run_all --methods), on the tiny twin.

Nothing here is about how fast anything is: the table must have a row per method with usable
numbers, a method that cannot run must cost one line and not the others, and the grid must price
every recorded run.
"""

import math
import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import bench_methods  # noqa: E402


def test_every_method_with_a_script_folder_is_measured_with_a_config_that_exists():
    folders = {d for d in os.listdir(os.path.join(REPO, "scripts"))
               if os.path.isfile(os.path.join(REPO, "scripts", d, "few_shot.sh"))}
    assert {folder for _, folder, _, _ in bench_methods.METHODS.values()} == folders
    for _, _, config, family in bench_methods.METHODS.values():
        assert os.path.isfile(os.path.join(REPO, config)), config
        assert family in bench_methods.FAMILY_ORDER


def test_the_section_gives_a_row_per_method_and_a_failing_method_one_line(capsys):
    # One method of each family, and one whose config is missing, placed before the others.
    wanted = ["CoOp", "KgCoOp", "TipAdapter", "CLIPLoRA", "MaPLe", "OGKD"]
    methods = {name: bench_methods.METHODS[name] for name in wanted}
    label, folder, _, family = methods["KgCoOp"]
    methods["KgCoOp"] = (label, folder, "configs/trainers/KgCoOp/no_such_config.yaml", family)
    out = bench_methods.methods_section(True, methods=methods, backbone="TinyBiomedCLIP", grid=False, timeout=300)
    printed = capsys.readouterr().out
    results = out["results"]
    assert list(results) == wanted
    # the steady seconds per extraction pass, measured at the start and the end, each on a cold cache
    assert len(out["rates"]) == 2 and min(out["rates"]) > 0
    broken = [line for line in printed.splitlines() if line.startswith("KgCoOp") and "not measured" in line]
    assert len(broken) == 1 and "error" in results["KgCoOp"]
    for name in wanted:
        if name == "KgCoOp":
            continue
        r = results[name]
        assert "error" not in r, (name, r)
        whole, formula = bench_methods.project(r, out["rate"])
        work = r["fit_s"] if r["kind"] == "fit" else r["step_s"]
        for value in (r["build_s"], work, r["test_s"], r["peak_gb"], whole):
            assert math.isfinite(value) and value > 0, (name, r)
        assert formula in printed  # every row shows how its whole run was projected
    # Frozen-feature methods counted their passes: training views and test images, nothing in the test.
    for name in ("CoOp", "TipAdapter", "OGKD"):
        r = results[name]
        assert r["passes"] >= r["n_train"] + r["n_test"] and r["test_passes"] == 0
    # Pixel methods pass every test image through the tower in the test, and train at the config's batch.
    for name in ("CLIPLoRA", "MaPLe"):
        assert results[name]["test_passes"] == results[name]["n_test"] and results[name]["passes"] == 0
    assert results["CLIPLoRA"]["batch"] == 32 and results["CLIPLoRA"]["n_train"] >= 32


def test_the_grid_prices_every_recorded_run_and_counts_unmeasured_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("DATASETS", "btmri busi")
    monkeypatch.setenv("SHOTS", "1 16")
    monkeypatch.setenv("SEEDS", "1")
    commands = bench_methods.paper_grid_commands(str(tmp_path))
    cached = {"kind": "cached", "build_s": 2.0, "step_s": 0.5, "per_epoch_s": 0.1, "first_extra_s": 0.0,
              "fit_s": 0.0, "extract_s": 5.0, "passes": 10, "n_train": 4, "n_test": 4, "test_s": 1.0,
              "test_once_s": 0.0}
    pixels = {**cached, "kind": "pixels", "extract_s": 0.0, "passes": 0}
    g = bench_methods.grid_hours({"CoOp": cached, "MaPLe": pixels, "GDA": {"error": "boom"}}, commands)
    fams = g["families"]
    runs = [c for c in commands if any(a.endswith("train.py") for a in c[:2])]  # not the table helpers
    assert sum(f["runs"] for f in fams.values()) == g["runs"] == len(runs) == 2 * 17 * 2 + 2 * 2
    # 2 datasets x 2 K x 1 seed per trained method, zero-shot once per dataset (twice: plain and ensemble)
    assert fams[bench_methods.TWO]["runs"] == 3 * 4 and fams[bench_methods.TWO]["unmeasured"] == 2 * 4
    assert fams[bench_methods.PROMPT]["seconds"] > 0 and fams[bench_methods.TWO]["seconds"] > 0
    assert fams[bench_methods.HEADS]["unmeasured"] == fams[bench_methods.HEADS]["runs"]
    assert g["shared_passes"] > 0 and g["per_pass"] == pytest.approx(0.5)
    # A run of MaPLe at K=16 on BTMRI costs more than at K=1: steps follow K, test images the dataset.
    one = bench_methods.grid_hours({"MaPLe": pixels}, [c for c in commands if "MaPLe_BiomedCLIP" in c
                                                       and c[c.index("DATASET.NUM_SHOTS") + 1] == "1"])
    sixteen = bench_methods.grid_hours({"MaPLe": pixels}, [c for c in commands if "MaPLe_BiomedCLIP" in c
                                                           and c[c.index("DATASET.NUM_SHOTS") + 1] == "16"])
    assert sixteen["families"][bench_methods.TWO]["seconds"] > one["families"][bench_methods.TWO]["seconds"]
    # The shared passes are those of every run whose image path is frozen under its config, whatever its
    # family: BiomedDPT (cached features of its zero-prompted tower) adds its own, MaPLe (pixels) none.
    def shared(method):
        return bench_methods.grid_hours({}, [c for c in commands if f"{method}_BiomedCLIP" in c])["shared_passes"]
    assert shared("BiomedDPT") > 0 and shared("MaPLe") == 0
