"""tools/check_data.py (datasets.check) names every planted problem at once; train.py names a bad image instead of
a traceback."""

from __future__ import annotations

import json
import os

import check_data
import pytest
from conftest import REPO
from make_synthetic_dataset import write_dataset

from datasets.check import check_dataset


@pytest.fixture
def busi(tmp_path) -> str:
    write_dataset(str(tmp_path), "BUSI", per_class=6, size=16)
    return str(tmp_path)


def image_dir(root: str) -> str:
    return os.path.join(root, "BUSI", "BUSI")


def split_path(root: str) -> str:
    return os.path.join(root, "BUSI", "split_BUSI.json")


def edit_split(root: str, fn) -> None:
    with open(split_path(root), encoding="utf-8") as f:
        split = json.load(f)
    fn(split)
    with open(split_path(root), "w", encoding="utf-8") as f:
        json.dump(split, f)


def test_clean_synthetic_dataset_passes(busi, capsys):
    assert check_data.main(["busi", "--root", busi]) == 0
    out = capsys.readouterr().out
    assert "OK: no problems found." in out
    assert "published split" in out  # the synthetic counts differ from the real ones: a warning, not a problem


def test_every_planted_problem_is_named(busi, capsys):
    d = image_dir(busi)
    missing = os.path.join(d, "benign_tumor", "benign_tumor_0000.png")
    truncated = os.path.join(d, "benign_tumor", "benign_tumor_0001.png")
    not_image = os.path.join(d, "malignant_tumor", "malignant_tumor_0002.png")
    empty = os.path.join(d, "normal_scan", "normal_scan_0003.png")
    os.remove(missing)
    with open(truncated, "rb") as f:
        data = f.read()
    with open(truncated, "wb") as f:
        f.write(data[: len(data) // 2])
    with open(not_image, "w") as f:
        f.write("this is a text file, not a PNG\n")
    open(empty, "wb").close()
    assert check_data.main(["BUSI", "--root", busi]) == 1
    out = capsys.readouterr().out
    lines = [line.strip() for line in out.splitlines()]
    assert f"missing file: {missing}" in lines
    for bad in (truncated, not_image, empty):
        assert any(line.startswith(f"unreadable image: {bad} (") for line in lines), bad
    assert "empty file" in out
    assert "4 problems:" in out and "FAILED" in out


def test_class_string_problems_are_named(busi, capsys):
    def rename(split):
        split["train"][0][2] = "benign tumour"  # label 0 now has two class strings
        for part in split.values():
            for row in part:
                if row[1] == 2:
                    row[2] = "healthy"  # not the declared "normal scan"

    edit_split(busi, rename)
    report = check_dataset("BUSI", busi, progress=False)
    text = "\n".join(report.problems)
    assert "label 0 is used with several class strings" in text
    assert "datasets/benchmarks.py declares" in text and "'healthy'" in text
    assert "no prompts for class 'healthy'" in text  # clip_prompts/BUSI.json has "normal scan"
    assert check_data.main(["BUSI", "--root", busi]) == 1


def test_prompt_file_mismatch_and_missing_prompts(busi, tmp_path):
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "BUSI.json").write_text(json.dumps({
        "dataset": "BUSI", "modality": "x",
        "classes": {"benign tumor": ["a"] * 50, "malignant tumor": ["b"] * 3, "cyst": ["c"] * 50},
    }))
    report = check_dataset("BUSI", busi, prompts_dir=str(prompts), progress=False)
    assert any("no prompts for class 'normal scan'" in p for p in report.problems)
    assert any("'malignant tumor' has 3 prompts" in w for w in report.warnings)
    assert any("['cyst']" in w for w in report.warnings)
    os.remove(prompts / "BUSI.json")
    report = check_dataset("BUSI", busi, prompts_dir=str(prompts), progress=False)
    assert report.ok and any("tools/generate_prompts.py" in w for w in report.warnings)


def test_malformed_split_rows_and_labels(busi):
    def damage(split):
        split["val"].append(["benign_tumor/x.png", "zero", "benign tumor"])
        split["test"].append(split["train"][1])  # listed twice

    edit_split(busi, damage)
    report = check_dataset("BUSI", busi, images=False, progress=False)
    text = "\n".join(report.problems)
    assert "val[" in text and "is not [relative_path, integer_label, classname]" in text
    assert "is listed 2 times (in train, test)" in text


def test_no_dataset_folder_is_a_usage_error(tmp_path, capsys):
    assert check_data.main(["BTMRI", "--root", str(tmp_path)]) == 2
    assert "tools/download_data.py BTMRI" in capsys.readouterr().err
    assert check_data.main(["MyScans", "--root", str(tmp_path)]) == 2
    assert "tools/prepare_dataset.py" in capsys.readouterr().err


def test_train_names_a_bad_image_instead_of_a_traceback(busi, tmp_path, capsys):
    """A corrupt test image, read in a DataLoader worker, reaches the user as one message naming it."""
    import train

    bad = os.path.join(image_dir(busi), "normal_scan", "normal_scan_0005.png")  # a test image
    with open(bad, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n garbage")
    rc = train.main([
        "--root", busi, "--seed", "1", "--trainer", "CoOp_TinyBiomedCLIP",
        "--dataset-config-file", os.path.join(REPO, "configs", "datasets", "busi.yaml"),
        "--config-file", os.path.join(REPO, "configs", "trainers", "CoOp", "vit_b16.yaml"),
        "--output-dir", str(tmp_path / "out"), "DATASET.NUM_SHOTS", "1", "OPTIM.MAX_EPOCH", "1",
        "DATALOADER.NUM_WORKERS", "2",
    ])
    assert rc == 2
    err = capsys.readouterr().err
    assert f"error: Cannot read image {bad}" in err
    assert "Traceback" not in err and "tools/check_data.py" in err
