"""The benchmark declarations against the 10 real split files (counts, label order) and Dassl's few-shot draws.

Images are empty placeholder files at the listed paths: the reader only checks that they exist.
tests/golden/fewshot_digest.json holds the subsets that Dassl's own generate_fewshot_dataset drew from
the same split files (see its "_about"), so these tests compare against Dassl, not against ourselves.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter

import pytest
from conftest import REPO, split_file

from datasets.benchmarks import BENCHMARKS, spec_for
from engine.config import get_cfg_default
from engine.registry import DATASET_REGISTRY
from engine.utils import set_random_seed

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "fewshot_digest.json")
REAL = [n for n in BENCHMARKS if n != "OCTMNIST"]  # the OCTMNIST split file (13 MB) is not shipped in tests/
SHOTS = (1, 2, 4, 8, 16)
SEEDS = (1, 2, 3)

# The published per-class train/val/test counts where known, and the label order of first appearance.
PER_CLASS = {
    "BTMRI": [(660, 264, 397), (669, 267, 403), (728, 291, 438), (797, 319, 479)],
    "BUSI": [(218, 87, 132), (105, 42, 63), (66, 26, 41)],
    "CHMNIST": [(312, 125, 188)] * 8,
    "COVID_19": [(1808, 723, 1085), (3006, 1202, 1804), (672, 269, 404), (5096, 2038, 3058)],
    "CTKidney": [(1854, 741, 1114), (688, 275, 414), (1141, 456, 686), (2538, 1015, 1524)],
    "DermaMNIST": [(227, 33, 66), (359, 52, 103), (769, 110, 220), (80, 12, 23), (779, 111, 223),
                   (4693, 671, 1341), (99, 14, 29)],
    "KneeXray": [(2286, 328, 639), (1046, 153, 296), (1516, 212, 447), (757, 106, 223), (173, 27, 51)],
    "Kvasir": [(250, 100, 150)] * 8,
    "LungColon": [(2500, 1000, 1500)] * 5,
    "RETINA": [(549, 219, 330), (503, 201, 303), (519, 207, 312), (537, 214, 323)],
}
FIRST_APPEARANCE = {
    "BTMRI": [0, 1, 3, 2], "BUSI": [0, 1, 2], "CHMNIST": list(range(8)), "COVID_19": [0, 1, 3, 2],
    "CTKidney": [0, 1, 2, 3], "DermaMNIST": [5, 4, 2, 1, 6, 0, 3], "KneeXray": [1, 0, 2, 3, 4],
    "Kvasir": list(range(8)), "LungColon": list(range(5)), "OCTMNIST": [3, 0, 1, 2], "RETINA": [2, 0, 1, 3],
}
# Base and new classes (KneeXray's "OA" written out as in the class strings).
BASE_NEW = {
    "BTMRI": (["glioma tumor", "meningioma tumor"], ["pituitary tumor", "normal brain"]),
    "BUSI": (["benign tumor", "malignant tumor"], ["normal scan"]),
    "CHMNIST": (["adipose tissue", "complex stroma", "debris", "empty background"],
                ["immune cells", "normal mucosal glands", "simple stroma", "tumour epithelium"]),
    "COVID_19": (["covid lungs", "lung opacity lungs"], ["viral pneumonia lungs", "normal lungs"]),
    "CTKidney": (["cyst kidney", "kidney stone"], ["kidney tumor", "normal kidney"]),
    "DermaMNIST": (["actinic keratosis", "basal cell carcinoma", "benign keratosis", "dermatofibroma"],
                   ["melanoma", "melanocytic nevus", "vascular lesion"]),
    "KneeXray": (["healthy knee", "doubtful osteoarthritis", "minimal osteoarthritis"],
                 ["moderate osteoarthritis", "severe osteoarthritis"]),
    "Kvasir": (["dyed lifted polyps", "dyed resection margins", "esophagitis", "normal cecum"],
               ["normal pylorus", "normal z line", "polyps", "ulcerative colitis"]),
    "LungColon": (["colon adenocarcinoma", "colon benign tissue", "lung adenocarcinoma"],
                  ["lung benign tissue", "lung squamous cell carcinoma"]),
    "OCTMNIST": (["choroidal neovascularization", "diabetic macular edema"], ["drusen", "normal OCT scan"]),
    "RETINA": (["diabetic retinopathy", "glaucoma"], ["cataract", "normal retina"]),
}


def digest(relpaths: list[str]) -> str:
    return hashlib.sha1("\n".join(relpaths).encode()).hexdigest()


def plant(root: str, name: str) -> None:
    """DATA/<name>/split_<name>.json (the real one) plus an empty file at every listed image path."""
    dataset_dir = os.path.join(root, name)
    image_dir = os.path.join(dataset_dir, name)
    os.makedirs(image_dir)
    shutil.copy(split_file(name), os.path.join(dataset_dir, f"split_{name}.json"))
    with open(split_file(name), encoding="utf-8") as f:
        rows = [row for part in json.load(f).values() for row in part]
    for folder in {r[0].rsplit("/", 1)[0] for r in rows}:
        os.makedirs(os.path.join(image_dir, folder), exist_ok=True)
    empty = os.path.join(dataset_dir, "empty.placeholder")
    open(empty, "wb").close()
    for relpath, _, _ in rows:  # hard links to one empty file: real directory entries, 10x faster than creating
        os.link(empty, os.path.join(image_dir, relpath))


@pytest.fixture(scope="module")
def real_root(tmp_path_factory) -> str:
    root = str(tmp_path_factory.mktemp("real"))
    for name in REAL:
        plant(root, name)
    return root


@pytest.fixture(scope="module")
def golden() -> dict:
    with open(GOLDEN, encoding="utf-8") as f:
        return json.load(f)


def make_cfg(root: str, name: str, shots: int = -1, seed: int = 1, subsample: str = "all"):
    cfg = get_cfg_default()
    cfg.DATASET.ROOT = root
    cfg.DATASET.NAME = name
    cfg.DATASET.NUM_SHOTS = shots
    cfg.DATASET.SUBSAMPLE_CLASSES = subsample
    cfg.SEED = seed
    return cfg


def build(root: str, name: str, **kw):
    return DATASET_REGISTRY.get(name)(make_cfg(root, name, **kw))


def test_every_benchmark_is_declared_with_its_config():
    assert list(BENCHMARKS) == list(FIRST_APPEARANCE)
    for name, spec in BENCHMARKS.items():
        assert name in DATASET_REGISTRY
        assert spec_for(spec.config) is spec and spec_for(name.lower()) is spec
        with open(os.path.join(REPO, "configs", "datasets", f"{spec.config}.yaml"), encoding="utf-8") as f:
            assert f'NAME: "{name}"' in f.read()
        base2new_cfg = os.path.join(REPO, "configs", "trainers", "BiomedCoOp", "base_to_novel", f"{spec.config}.yaml")
        assert os.path.isfile(base2new_cfg) == spec.has_base2new == (name != "BUSI")
    assert spec_for("OCTMNIST").class_dirs[3] == "normal_OCT_scan"


@pytest.mark.parametrize("name", REAL)
def test_reader_accepts_real_split(real_root, name):
    spec = BENCHMARKS[name]
    ds = build(real_root, name)
    assert {"train": len(ds.train_x), "val": len(ds.val), "test": len(ds.test)} == spec.counts
    assert ds.classnames == list(spec.classnames)
    assert ds.num_classes == len(spec.classnames)
    for part in (ds.train_x, ds.val, ds.test):
        for d in part:  # class folder = class string with underscores; one label <-> one class string
            assert d.relpath.split("/", 1)[0] == spec.class_dirs[d.label]
            assert d.classname == spec.classnames[d.label]
            assert d.impath.endswith(d.relpath) and os.path.isfile(d.impath)
    per_class = [Counter(d.label for d in part) for part in (ds.train_x, ds.val, ds.test)]
    assert [tuple(c[label] for c in per_class) for label in range(ds.num_classes)] == PER_CLASS[name]
    order = list(dict.fromkeys(d.label for d in ds.train_x))
    assert order == FIRST_APPEARANCE[name]
    if name != "RETINA":  # RETINA mixes .jpg, .png and .jpeg
        assert {os.path.splitext(d.relpath)[1] for d in ds.test} == {spec.image_ext}
    # tools/check_data.py finds nothing wrong with the real split (images not decoded: they are placeholders),
    # and clip_prompts/<NAME>.json has prompts for every class string.
    from datasets.check import check_dataset

    report = check_dataset(name, real_root, images=False, progress=False)
    assert report.problems == [] and report.warnings == [], report.problems + report.warnings


@pytest.mark.parametrize("name", REAL)
def test_fewshot_subsets_are_the_ones_dassl_draws(real_root, golden, name):
    for shots in SHOTS:
        for seed in SEEDS:
            key = f"{name}/{shots}/{seed}"
            want = golden["digests"][key]
            set_random_seed(seed)  # what train.py does before building the trainer (and so the dataset)
            ds = build(real_root, name, shots=shots, seed=seed)
            train = [d.relpath for d in ds.train_x]
            val = [d.relpath for d in ds.val]
            assert len(train) == want["n_train"] == shots * ds.num_classes, key
            assert len(val) == want["n_val"] == min(shots, 4) * ds.num_classes, key
            assert (train[0], val[-1]) == (want["train_first"], want["val_last"]), key
            assert (digest(train), digest(val)) == (want["train"], want["val"]), key
            assert len(ds.test) == BENCHMARKS[name].counts["test"]  # test is never subsampled
    # The cached subset (split_fewshot/shot_K-seed_S.json) reads back identically, whatever the RNG state.
    set_random_seed(12345)
    again = build(real_root, name, shots=4, seed=2)
    assert digest([d.relpath for d in again.train_x]) == golden["digests"][f"{name}/4/2"]["train"]
    cache = os.path.join(real_root, name, "split_fewshot", "shot_4-seed_2.json")
    with open(cache, encoding="utf-8") as f:
        assert not os.path.isabs(json.load(f)["train"][0][0])  # relative paths: a moved root still works


def test_fewshot_literal_picks(real_root, golden):
    for key, want in golden["literal"].items():
        name, shots, seed = key.split("/")
        set_random_seed(int(seed))
        ds = build(real_root, name, shots=int(shots), seed=int(seed))
        assert [d.relpath for d in ds.train_x] == want["train"]
        assert [d.relpath for d in ds.val] == want["val"]


@pytest.mark.parametrize("name", REAL)
def test_base_and_new_classes(real_root, name):
    base, new = BASE_NEW[name]
    for subsample, expected in (("base", base), ("new", new)):
        set_random_seed(1)
        ds = build(real_root, name, shots=16, seed=1, subsample=subsample)
        assert ds.classnames == expected
        for part in (ds.train_x, ds.val, ds.test):
            assert {d.classname for d in part} == set(expected)
            assert {d.label for d in part} == set(range(len(expected)))
        assert len(ds.train_x) == 16 * len(expected)


def test_octmnist_declaration_without_its_split_file():
    """OCTMNIST's split file (13 MB) is not shipped: check the declaration against the published counts and classes."""
    spec = BENCHMARKS["OCTMNIST"]
    assert spec.classnames == ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal OCT scan")
    assert spec.counts == {"train": 97476, "val": 10832, "test": 1000}
    assert spec.image_ext == ".png"
    assert list(spec.classnames[:2]) == BASE_NEW["OCTMNIST"][0]


def test_train_py_draws_the_dassl_subset(tmp_path, golden):
    """End to end: train.py seeds, builds the trainer (backbone, then dataset: neither draws from the
    other's RNG) and caches the Dassl subset."""
    import train

    root = str(tmp_path / "data")
    plant(root, "BUSI")
    out = str(tmp_path / "out")
    rc = train.main([
        "--root", root, "--seed", "3", "--trainer", "CoOp_TinyBiomedCLIP", "--no-train",
        "--dataset-config-file", os.path.join(REPO, "configs", "datasets", "busi.yaml"),
        "--output-dir", out, "DATASET.NUM_SHOTS", "8",
    ])
    assert rc == 0
    with open(os.path.join(root, "BUSI", "split_fewshot", "shot_8-seed_3.json"), encoding="utf-8") as f:
        cached = json.load(f)
    want = golden["digests"]["BUSI/8/3"]
    assert digest([r[0] for r in cached["train"]]) == want["train"]
    assert digest([r[0] for r in cached["val"]]) == want["val"]


# ----- synthetic datasets in every benchmark's layout (tools/make_synthetic_dataset.py) -----------------------


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> str:
    from make_synthetic_dataset import write_dataset

    root = str(tmp_path_factory.mktemp("synthetic"))
    for name in BENCHMARKS:
        write_dataset(root, name, per_class=5, size=16)
    return root


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_synthetic_dataset_has_the_benchmark_layout(synthetic_root, name):
    from PIL import Image

    from datasets.check import check_dataset

    spec = BENCHMARKS[name]
    image_dir = os.path.join(synthetic_root, name, name)
    assert sorted(os.listdir(image_dir)) == sorted(spec.class_dirs)
    files = [os.path.join(image_dir, c, f) for c in spec.class_dirs for f in os.listdir(os.path.join(image_dir, c))]
    assert {os.path.splitext(f)[1] for f in files} == {spec.image_ext}  # .tif for CHMNIST, .jpeg for LungColon
    with Image.open(files[0]) as img:
        assert img.size == (16, 16)
    ds = build(synthetic_root, name)
    assert ds.classnames == list(spec.classnames)
    report = check_dataset(name, synthetic_root, progress=False)
    assert report.problems == []


def test_octmnist_synthetic_folder_keeps_mixed_case(synthetic_root):
    assert os.path.isdir(os.path.join(synthetic_root, "OCTMNIST", "OCTMNIST", "normal_OCT_scan"))
    ds = build(synthetic_root, "OCTMNIST")
    assert ds.classnames[3] == "normal OCT scan"


def coop_argv(root: str, name: str, out: str) -> list[str]:
    """What scripts/coop/few_shot.sh passes to train.py for one seed (scripts/common.sh few_shot)."""
    return [
        "--root", root, "--seed", "1", "--trainer", "CoOp_TinyBiomedCLIP",
        "--dataset-config-file", os.path.join(REPO, "configs", "datasets", f"{BENCHMARKS[name].config}.yaml"),
        "--config-file", os.path.join(REPO, "configs", "trainers", "CoOp", "vit_b16.yaml"),
        "--output-dir", out, "DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "2", "DATALOADER.NUM_WORKERS", "0",
    ]


@pytest.mark.parametrize("name", [n for n in BENCHMARKS if n != "CHMNIST"])
def test_coop_trains_on_every_synthetic_benchmark(synthetic_root, tmp_path, name):
    import train

    out = str(tmp_path / "out")
    assert train.main(coop_argv(synthetic_root, name, out)) == 0
    with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
        assert f.read()


def test_coop_few_shot_script_on_a_synthetic_benchmark(synthetic_root, tmp_path):
    """The shell script itself, on CHMNIST (.tif images); the other ten run in-process above."""
    import subprocess

    env = dict(os.environ, SEEDS="1", OUTPUT_ROOT=str(tmp_path / "output"),
               EXTRA_OPTS="OPTIM.MAX_EPOCH 2 DATALOADER.NUM_WORKERS 0")
    result = subprocess.run(
        ["bash", os.path.join(REPO, "scripts", "coop", "few_shot.sh"), synthetic_root, "CHMNIST", "2",
         "TinyBiomedCLIP"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seed_dir = tmp_path / "output" / "chmnist" / "shots_2" / "CoOp_TinyBiomedCLIP" / "nctx4_cscFalse_ctpend" / "seed1"
    assert (seed_dir / "results.json").is_file() and "* accuracy:" in (seed_dir / "log.txt").read_text()
