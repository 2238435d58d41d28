"""The user's own data: tools/prepare_dataset.py (datasets.prepare), the generic reader, and docs/own_data.md run
as written."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
from collections import Counter

import prepare_dataset
import pytest
from conftest import REPO
from make_synthetic_dataset import write_dataset

import datasets.prepare
from datasets.prepare import prepare
from engine.config import get_cfg_default
from engine.errors import UserError
from engine.registry import DATASET_REGISTRY
from engine.utils import set_random_seed


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
    """A folder of class sub-folders (20 images each), plus a stray non-image file and a nested folder."""
    root = str(tmp_path_factory.mktemp("synth"))
    write_dataset(root, "BUSI", per_class=20, size=16)
    image_dir = os.path.join(root, "BUSI", "BUSI")
    with open(os.path.join(image_dir, "benign_tumor", "notes.txt"), "w") as f:
        f.write("not an image\n")
    nested = os.path.join(image_dir, "normal_scan", "second_visit")
    os.makedirs(nested)
    first = os.path.join(image_dir, "normal_scan", "normal_scan_0000.png")
    os.link(first, os.path.join(nested, "normal_scan_0000.png"))
    return image_dir


def read_split(root: str, name: str) -> dict:
    with open(os.path.join(root, name, f"split_{name}.json"), encoding="utf-8") as f:
        return json.load(f)


def load(root: str, name: str, shots: int = -1, seed: int = 1, subsample: str = "all"):
    cfg = get_cfg_default()
    cfg.DATASET.ROOT, cfg.DATASET.NAME, cfg.DATASET.NUM_SHOTS, cfg.SEED = root, name, shots, seed
    cfg.DATASET.SUBSAMPLE_CLASSES = subsample
    set_random_seed(seed)
    return DATASET_REGISTRY.get(name)(cfg)


def test_prepare_from_folder(folder, tmp_path, capsys):
    root, configs = str(tmp_path / "DATA"), str(tmp_path / "configs")
    rc = prepare_dataset.main(["--folder", folder, "--name", "MyScans", "--root", root, "--config-dir", configs])
    assert rc == 0
    out = capsys.readouterr().out
    assert "skipped 1 file(s)" in out and "tools/check_data.py MyScans" in out
    with open(os.path.join(configs, "myscans.yaml"), encoding="utf-8") as f:
        assert 'NAME: "MyScans"' in f.read()
    split = read_split(root, "MyScans")
    per = {part: Counter(row[2] for row in rows) for part, rows in split.items()}
    # 21 normal scans: round(10.5) = 10 train, round(4.2) = 4 val, the rest test (the reference's rounding)
    assert per["train"] == {"benign tumor": 10, "malignant tumor": 10, "normal scan": 10}
    assert per["val"] == {"benign tumor": 4, "malignant tumor": 4, "normal scan": 4}
    assert per["test"] == {"benign tumor": 6, "malignant tumor": 6, "normal scan": 7}
    assert any(row[0].startswith("normal_scan/") and row[0].count("1_normal_scan_0000") for rows in split.values()
               for row in rows)  # the same file name from the nested folder is kept apart
    ds = load(root, "MyScans")
    assert ds.classnames == ["benign tumor", "malignant tumor", "normal scan"]
    assert len(ds.train_x) + len(ds.val) + len(ds.test) == 61
    for d in ds.test:
        assert os.path.isfile(d.impath) and d.relpath.split("/")[0] == d.classname.replace(" ", "_")
    few = load(root, "MyScans", shots=4, seed=2)
    assert len(few.train_x) == 12 and len(few.val) == 12
    assert load(root, "MyScans", shots=4, subsample="new").classnames == ["normal scan"]
    assert not [n for n in os.listdir(root) if n.startswith(".")]  # no temporary folder left


def test_split_is_seeded_and_configurable(folder, tmp_path):
    def rows(root, **kw):
        prepare("Scans", root, folder=folder, config_dir=str(tmp_path / "cfg"), force=True, **kw)
        return read_split(root, "Scans")

    a = rows(str(tmp_path / "a"))
    assert rows(str(tmp_path / "b")) == a
    assert rows(str(tmp_path / "c"), seed=7) != a
    custom = rows(str(tmp_path / "d"), split="60/20/20")
    assert Counter(r[2] for r in custom["train"])["benign tumor"] == 12


def test_prepare_from_csv_with_mapping(folder, tmp_path):
    with open(tmp_path / "labels.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["path", "label", "split"])
        for label, cls in enumerate(["benign_tumor", "malignant_tumor", "normal_scan"]):
            for i in range(12):
                # images 0 and 1 of a class have the same file name, in two different folders
                rel = f"imgs/{cls}/{'ab'[i % 2]}/" + ("img.png" if i < 2 else f"{i}.png")
                os.makedirs(os.path.dirname(tmp_path / rel), exist_ok=True)
                os.link(os.path.join(folder, cls, f"{cls}_{i:04d}.png"), tmp_path / rel)
                out.writerow([rel, label, "test"] if i == 11 else [rel, label])  # image 11: split fixed
    (tmp_path / "names.json").write_text(json.dumps({"2": "no lesion", "0": "benign lesion", "1": "malignant lesion"}))
    root = str(tmp_path / "DATA")
    prepare("Lesions", root, csv_path=str(tmp_path / "labels.csv"),
                            classnames=str(tmp_path / "names.json"), config_dir=str(tmp_path / "cfg"), mode="copy")
    split = read_split(root, "Lesions")
    labels = {row[2]: row[1] for rows in split.values() for row in rows}
    assert labels == {"no lesion": 0, "benign lesion": 1, "malignant lesion": 2}  # the mapping's order
    assert sum(len(v) for v in split.values()) == 36
    assert sum(1 for row in split["test"] if row[0].endswith("/11.png")) == 3  # the fixed split column
    relpaths = [row[0] for rows in split.values() for row in rows]
    assert len(set(relpaths)) == 36 and all(r.split("/")[0] in ("no_lesion", "benign_lesion", "malignant_lesion")
                                             for r in relpaths)
    assert load(root, "Lesions").classnames == ["no lesion", "benign lesion", "malignant lesion"]


@pytest.mark.parametrize("args, message", [
    (["--name", "BUSI"], "benchmark name BUSI"),
    (["--name", "btmri"], "benchmark name BTMRI"),
    (["--name", "my scans"], "use letters, digits"),
    (["--name", "Ok", "--split", "50/20"], "three non-negative numbers"),
    (["--name", "Ok", "--classnames", "/nonexistent.json"], "--classnames file not found"),
])
def test_bad_arguments_are_named(folder, tmp_path, capsys, args, message):
    rc = prepare_dataset.main(["--folder", folder, "--root", str(tmp_path / "D"), "--config-dir", str(tmp_path), *args])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "D").exists()


def _numbered_csv(tmp_path, folder) -> str:
    with open(tmp_path / "numbered.csv", "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["path", "label"])
        for label, cls in enumerate(["benign_tumor", "malignant_tumor"]):
            for i in range(4):
                out.writerow([os.path.join(folder, cls, f"{cls}_{i:04d}.png"), label])
    return str(tmp_path / "numbered.csv")


def test_csv_summary_names_the_csv_label_beside_its_class_string(folder, tmp_path, capsys):
    labels = _numbered_csv(tmp_path, folder)
    (tmp_path / "names.json").write_text(json.dumps({"0": "benign lesion", "1": "malignant lesion"}))
    common = ["--csv", labels, "--root", str(tmp_path / "D"), "--config-dir", str(tmp_path)]
    assert prepare_dataset.main([*common, "--name", "Named", "--classnames", str(tmp_path / "names.json")]) == 0
    out = capsys.readouterr().out
    assert "label  class string (CSV label; image folder): train / val / test" in out
    assert "    0  benign lesion (0; benign_lesion): 2 / 1 / 1" in out
    assert "class string (folder)" not in out and "bare labels" not in out

    # Without --classnames the CSV label is the class string: said so, with the fix.
    assert prepare_dataset.main([*common, "--name", "Bare"]) == 0
    out = capsys.readouterr().out
    assert "    1  1 (1; 1): 2 / 1 / 1" in out
    assert "class strings ['0', '1'] are bare labels" in out and "--classnames" in out


def test_folder_summary_keeps_its_documented_header(folder, tmp_path, capsys):
    assert prepare_dataset.main(["--folder", folder, "--name", "Scans", "--root", str(tmp_path / "D"),
                                 "--config-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "label  class string (folder): train / val / test" in out
    assert "    0  benign tumor (benign_tumor): 10 / 4 / 6" in out and "bare labels" not in out


def test_csv_problems_are_listed_together(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "bad.csv").write_text("a.png,cat\nmissing1.png,dog\nmissing2.png,dog\nonly-one-cell\n")
    with pytest.raises(UserError) as err:
        prepare("Pets", str(tmp_path / "D"), csv_path=str(tmp_path / "bad.csv"),
                                config_dir=str(tmp_path))
    text = str(err.value)
    assert "row 4" in text and "2 listed file(s) do not exist" in text and "missing1.png" in text


def test_one_class_and_unmapped_classes_are_refused(folder, tmp_path):
    kw = {"config_dir": str(tmp_path)}
    with pytest.raises(UserError, match="at least two"):
        prepare("One", str(tmp_path / "D"), folder=os.path.dirname(os.path.dirname(folder)), **kw)
    (tmp_path / "m.json").write_text(json.dumps({"benign_tumor": "benign"}))
    with pytest.raises(UserError, match=r"no entry for \['malignant_tumor', 'normal_scan'\]"):
        prepare("Two", str(tmp_path / "D"), folder=folder, classnames=str(tmp_path / "m.json"), **kw)


def test_existing_dataset_needs_force_and_failure_leaves_nothing(folder, tmp_path, monkeypatch):
    root, kw = str(tmp_path / "D"), {"folder": folder, "config_dir": str(tmp_path)}
    prepare("Scans", root, **kw)
    with pytest.raises(UserError, match="--force"):
        prepare("Scans", root, **kw)
    calls = []

    def failing_place(src, dst, mode):
        calls.append(src)
        if len(calls) % 25 == 0:
            raise OSError("disk full")
        os.link(src, dst)

    monkeypatch.setattr(datasets.prepare, "place", failing_place)
    with pytest.raises(OSError):
        prepare("Scans", root, force=True, **kw)
    with pytest.raises(OSError):
        prepare("Fresh", root, **kw)
    assert sorted(os.listdir(root)) == ["Scans"]  # the old copy is intact; no Fresh, no temporary folder
    assert sum(len(v) for v in read_split(root, "Scans").values()) == 61


def test_unknown_names(tmp_path):
    with pytest.raises(UserError, match="Did you mean the benchmark BTMRI"):
        load(str(tmp_path), "BTMR")
    with pytest.raises(UserError, match="not a benchmark.*tools/prepare_dataset.py --folder DIR --name Nowhere"):
        load(str(tmp_path), "Nowhere")


def test_biomedcoop_without_prompts_says_how_to_make_them(folder, tmp_path, capsys):
    import train

    root, configs = str(tmp_path / "DATA"), str(tmp_path / "cfg")
    prepare("NoPrompts", root, folder=folder, config_dir=configs)
    rc = train.main([
        "--root", root, "--seed", "1", "--trainer", "BiomedCoOp_TinyBiomedCLIP",
        "--dataset-config-file", os.path.join(configs, "noprompts.yaml"),
        "--config-file", os.path.join(REPO, "configs", "trainers", "BiomedCoOp", "few_shot", "busi.yaml"),
        "--output-dir", str(tmp_path / "out"), "DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "1",
    ])
    assert rc == 2
    err = capsys.readouterr().err
    assert "No prompt ensemble at" in err and "NoPrompts.json" in err and "tools/generate_prompts.py" in err


def repo_view(tmp_path) -> str:
    """A folder that looks like the repository (code linked, configs/datasets copied) so the docs'
    commands run verbatim without writing into the real checkout."""
    view = tmp_path / "repo"
    (view / "configs").mkdir(parents=True)
    for entry in ("backbones", "clip_prompts", "datasets", "engine", "scripts", "tools", "trainers", "train.py"):
        os.symlink(os.path.join(REPO, entry), view / entry)
    os.symlink(os.path.join(REPO, "configs", "trainers"), view / "configs" / "trainers")
    subprocess.run(["cp", "-r", os.path.join(REPO, "configs", "datasets"), str(view / "configs")], check=True)
    return str(view)


def test_docs_own_data_commands_run_as_written(tmp_path):
    with open(os.path.join(REPO, "docs", "own_data.md"), encoding="utf-8") as f:
        blocks = re.findall(r"```bash\n(.*?)```", f.read(), flags=re.S)
    assert len(blocks) >= 5
    view = repo_view(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("SEEDS", "EXTRA_OPTS", "OUTPUT_ROOT")}
    for block in blocks:
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=view, env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{block}\n--- out\n{result.stdout[-3000:]}\n--- err\n{result.stderr[-3000:]}"
    results = os.path.join(view, "output", "myscans", "shots_4", "CoOp_TinyBiomedCLIP", "nctx4_cscFalse_ctpend",
                           "seed1", "results.json")
    assert os.path.isfile(results)
    assert os.path.isfile(os.path.join(view, "DATA", "MyLesions", "dataset.yaml"))
    # The walkthrough writes nothing into the source tree (a stray dataset config there broke the suite).
    assert sorted(os.listdir(os.path.join(view, "configs", "datasets"))) == sorted(
        os.listdir(os.path.join(REPO, "configs", "datasets")))
