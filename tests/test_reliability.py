"""Reliability: no stale or silently reused results, safe shared data, one-line answers to mistakes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_data(root, per_class: int = 8, seed: int = 0) -> str:
    """A private synthetic BTMRI (tests here change or remove its files)."""
    from make_synthetic_dataset import write_dataset

    write_dataset(str(root), "BTMRI", per_class=per_class, size=16, seed=seed)
    return str(root)


def args_for(root, out, *extra, trainer="BiomedCoOp_TinyBiomedCLIP", shots=2, epochs=2, flags=()):
    return [
        "--root", str(root), "--seed", "1", "--trainer", trainer, *flags,
        "--dataset-config-file", os.path.join(REPO, "configs/datasets/btmri.yaml"),
        "--config-file", os.path.join(REPO, "configs/trainers/BiomedCoOp/few_shot/btmri.yaml"),
        "--output-dir", str(out), "DATASET.NUM_SHOTS", str(shots), "OPTIM.MAX_EPOCH", str(epochs),
        "DATALOADER.NUM_WORKERS", "0", *extra,
    ]


# ----- 2. stale results ---------------------------------------------------------------------------
def test_finished_seed_is_skipped_only_when_its_config_matches(tmp_path, capsys):
    data = make_data(tmp_path / "data")
    out = tmp_path / "run"
    assert train.main(args_for(data, out, flags=["--skip-finished"])) == 0
    record = json.load(open(out / "results.json"))
    assert record["config"]["OPTIM.MAX_EPOCH"] == 2 and record["config"]["TRAINER.BIOMEDCOOP.TAU"] == 1.5
    assert record["pretrained"] is True and record["backbone"] == "TinyBiomedCLIP"
    capsys.readouterr()

    assert train.main(args_for(data, out, flags=["--skip-finished"])) == 0
    assert "Skip this job" in capsys.readouterr().out

    changed = args_for(data, out, "TRAINER.BIOMEDCOOP.TAU", "1.0", epochs=3, flags=["--skip-finished"])
    assert train.main(changed) == 2
    err = capsys.readouterr().err
    assert "OPTIM.MAX_EPOCH: 2 -> 3" in err and "TRAINER.BIOMEDCOOP.TAU: 1.5 -> 1.0" in err
    assert "OUTPUT_ROOT" in err and "FORCE=1" in err
    assert json.load(open(out / "results.json")) == record  # nothing was overwritten

    # Without --skip-finished (FORCE=1 in the scripts) the seed is redone with the new settings.
    assert train.main(args_for(data, out, "TRAINER.BIOMEDCOOP.TAU", "1.0", epochs=3)) == 0
    assert json.load(open(out / "results.json"))["config"]["TRAINER.BIOMEDCOOP.TAU"] == 1.0


def test_results_without_a_recorded_config_are_not_trusted(tmp_path, capsys):
    out = tmp_path / "old"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"accuracy": 99.0}))
    assert train.main(args_for(tmp_path, out, flags=["--skip-finished"])) == 2
    assert "does not record the settings" in capsys.readouterr().err


def script_commands(tmp_path, script, args, **env):
    """The train.py command lines a script would run (PYTHON=echo prints instead of running)."""
    full_env = {**os.environ, "PYTHON": "echo", "SEEDS": "1", **env}
    proc = subprocess.run(["bash", os.path.join(REPO, script), *args], cwd=tmp_path, env=full_env,
                          capture_output=True, text=True, timeout=60, check=True)
    return proc.stdout.splitlines()


def test_scripts_skip_only_matching_seeds_and_keep_random_weights_apart(tmp_path):
    few = ["DATA", "btmri", "4", "BiomedCLIP"]
    (line,) = script_commands(tmp_path, "scripts/biomedcoop/few_shot.sh", few)
    assert "--skip-finished" in line and "/BiomedCoOp_BiomedCLIP/" in line
    (line,) = script_commands(tmp_path, "scripts/biomedcoop/few_shot.sh", few, FORCE="1")
    assert "--skip-finished" not in line
    (line,) = script_commands(tmp_path, "scripts/biomedcoop/few_shot.sh", few,
                              EXTRA_OPTS="MODEL.BACKBONE.PRETRAINED False OPTIM.MAX_EPOCH 2")
    assert "/BiomedCoOp_BiomedCLIP-random/" in line
    lines = script_commands(tmp_path, "scripts/biomedcoop/base2new.sh", ["DATA", "btmri", "BiomedCLIP"],
                            EXTRA_OPTS="MODEL.BACKBONE.PRETRAINED false")
    assert len(lines) == 2 and all("BiomedCoOp_BiomedCLIP-random/" in x and "--skip-finished" in x for x in lines)


def test_random_weights_never_carry_the_real_model_label(tmp_path):
    from engine.config import get_cfg_default
    from engine.trainer import backbone_label

    cfg = get_cfg_default()
    cfg.MODEL.BACKBONE.NAME = "BiomedCLIP"
    assert backbone_label(cfg) == "BiomedCLIP"
    cfg.MODEL.BACKBONE.PRETRAINED = False
    assert backbone_label(cfg) == "BiomedCLIP-random"


@pytest.fixture(autouse=True)
def _quiet_tqdm(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")


def test_keys_added_by_new_code_do_not_make_a_finished_run_stale():
    from engine.config import config_differences

    old = {"OPTIM.LR": 0.002, "TRAINER.COOP.N_CTX": 4}
    assert config_differences(old, {**old, "TRAINER.NEWMETHOD.ALPHA": 1.0}) == []
    assert config_differences(old, {**old, "OPTIM.LR": 0.02}) == ["OPTIM.LR: 0.002 -> 0.02"]


# ----- 1. stale features ---------------------------------------------------------------------------
def read_split_items(root):
    from datasets.split_json import SplitJsonDataset
    from engine.config import get_cfg_default

    cfg = get_cfg_default()
    cfg.DATASET.NAME, cfg.DATASET.ROOT = "BTMRI", str(root)
    reader = type("BTMRI", (SplitJsonDataset,), {"spec": None})
    return reader(cfg).test, cfg


def test_regenerated_images_are_encoded_again(tmp_path, tiny_biomedclip):
    from engine.data import build_transform, transform_spec
    from engine.features import FeatureCache

    data = make_data(tmp_path / "data", per_class=5)
    items, cfg = read_split_items(data)
    tfm, spec = build_transform(cfg, False), transform_spec(cfg, False)
    cache_dir = str(tmp_path / "cache")
    before = FeatureCache(cache_dir, tiny_biomedclip, torch.device("cpu")).get(items, tfm, spec)[0]

    make_data(tmp_path / "data", per_class=5, seed=7)  # every pixel redrawn, same file names
    for d in items[:3]:  # three files also get a later time stamp, whatever the file system's clock grain
        st = os.stat(d.impath)
        os.utime(d.impath, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    encoded = []
    cache = FeatureCache(cache_dir, tiny_biomedclip, torch.device("cpu"))
    original = cache._compute
    cache._compute = lambda jobs, *a: (encoded.append(len(jobs)), original(jobs, *a))
    after = cache.get(items, tfm, spec)[0]
    fresh = FeatureCache(str(tmp_path / "fresh"), tiny_biomedclip, torch.device("cpu")).get(items, tfm, spec)[0]
    assert encoded and encoded[0] >= 3
    assert torch.allclose(after, fresh) and not torch.allclose(after[:3], before[:3])
    encoded.clear()
    assert torch.equal(FeatureCache(cache_dir, tiny_biomedclip, torch.device("cpu")).get(items, tfm, spec)[0], after)


# ----- 3. stale resume, NaN losses ---------------------------------------------------------------
def test_nan_loss_stops_in_one_line_and_leaves_nothing_to_replay(synthetic_btmri, tmp_path, capsys):
    out = tmp_path / "run"
    assert train.main(args_for(synthetic_btmri, out, "OPTIM.LR", "1e30", epochs=4)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: The loss") and "at epoch" in err and "batch" in err and "OPTIM.LR" in err
    assert len(err.splitlines()) == 1
    assert not (out / "resume.pth").exists()
    assert train.main(args_for(synthetic_btmri, out, epochs=4)) == 0  # a sane LR then starts afresh


def test_resume_state_of_other_settings_is_refused(synthetic_btmri, tmp_path, monkeypatch, capsys):
    from engine.trainer import TrainerX

    original = TrainerX.after_epoch

    def crash_after_first_epoch(self):
        original(self)
        if self.epoch == 0:
            raise KeyboardInterrupt

    out = tmp_path / "run"
    monkeypatch.setattr(TrainerX, "after_epoch", crash_after_first_epoch)
    assert train.main(args_for(synthetic_btmri, out, epochs=3)) == 130  # Ctrl-C's exit status
    monkeypatch.setattr(TrainerX, "after_epoch", original)
    assert (out / "resume.pth").exists()
    assert train.main(args_for(synthetic_btmri, out, "OPTIM.LR", "0.5", epochs=3)) == 2
    err = capsys.readouterr().err
    assert "OPTIM.LR: 0.0025 -> 0.5" in err and "delete" in err and "resume.pth" in err
    assert train.main(args_for(synthetic_btmri, out, epochs=3)) == 0  # its own settings resume it
    assert "Resuming from" in (out / "log.txt").read_text() + "".join(
        p.read_text() for p in out.glob("log.txt-*"))


# ----- 9. values checked once, at config time ------------------------------------------------------
@pytest.mark.parametrize("key,value,named", [
    ("DATASET.NUM_SHOTS", "0", "DATASET.NUM_SHOTS"),
    ("DATASET.NUM_SHOTS", "-3", "DATASET.NUM_SHOTS"),
    ("TEST.SPLIT", "train", "TEST.SPLIT"),
    ("OPTIM.MAX_EPOCH", "0", "OPTIM.MAX_EPOCH"),
    ("DATALOADER.TRAIN_X.BATCH_SIZE", "0", "DATALOADER.TRAIN_X.BATCH_SIZE"),
    ("DATALOADER.TEST.BATCH_SIZE", "0", "DATALOADER.TEST.BATCH_SIZE"),
])
def test_bad_values_stop_with_one_line_naming_the_key(tmp_path, capsys, key, value, named):
    assert train.main(args_for(tmp_path, tmp_path / "out", key, value)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {named} must") and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_all_images_and_small_classes_are_logged(synthetic_btmri, tmp_path):
    assert train.main(args_for(synthetic_btmri, tmp_path / "all", shots=-1, epochs=1, flags=["--no-train"])) == 0
    assert "training on all 40 training images" in (tmp_path / "all" / "log.txt").read_text()
    assert train.main(args_for(synthetic_btmri, tmp_path / "k", shots=12, epochs=1, flags=["--no-train"])) == 0
    log = (tmp_path / "k" / "log.txt").read_text()
    assert "4 class(es) have fewer than 12 training images" in log and "glioma tumor (10)" in log


@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]"])
def test_parse_test_res_names_a_broken_results_file(tmp_path, content):
    (tmp_path / "seed1").mkdir()
    (tmp_path / "seed1" / "results.json").write_text(content)
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools/parse_test_res.py"), str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert str(tmp_path / "seed1" / "results.json") in proc.stderr


# ----- 6. benchmarks stay benchmarks ----------------------------------------------------------------
def test_missing_benchmark_split_file_is_an_error_naming_the_download(tmp_path, capsys):
    data = make_data(tmp_path / "data", per_class=5)
    os.remove(os.path.join(data, "BTMRI", "split_BTMRI.json"))
    assert train.main(args_for(data, tmp_path / "out", flags=["--no-train"])) == 2
    err = capsys.readouterr().err
    assert "split_BTMRI.json is missing" in err and f"tools/download_data.py BTMRI --root {data}" in err
    assert not os.path.exists(os.path.join(data, "BTMRI", "split_BTMRI.json"))


def test_own_dataset_without_split_gets_one_fixed_split(tmp_path):
    import shutil

    from datasets.own import own_dataset_reader
    from engine.config import get_cfg_default

    data = make_data(tmp_path / "src", per_class=10)
    shutil.copytree(os.path.join(data, "BTMRI", "BTMRI"), tmp_path / "root" / "MyScans" / "MyScans")
    splits = []
    for seed in (3, 1):
        import random

        random.seed(seed)  # the run's seed must not change the split
        cfg = get_cfg_default()
        cfg.DATASET.NAME, cfg.DATASET.ROOT, cfg.SEED = "MyScans", str(tmp_path / "root"), seed
        own_dataset_reader("MyScans")(cfg)
        splits.append(json.load(open(tmp_path / "root" / "MyScans" / "split_MyScans.json")))
        os.remove(tmp_path / "root" / "MyScans" / "split_MyScans.json")
    assert splits[0] == splits[1] and len(splits[0]["train"]) == 20 and len(splits[0]["test"]) == 12


# ----- 11. concurrent feature-cache writers --------------------------------------------------------
WRITER = r"""
import os, sys, time
sys.path[:0] = [{repo!r}, os.path.join({repo!r}, "tools")]
import torch
import backbones, datasets  # noqa
from engine.config import get_cfg_default
from engine.data import build_transform, transform_spec
from engine.features import FeatureCache
from engine.registry import BACKBONE_REGISTRY
from datasets.split_json import SplitJsonDataset

part, root, cache_dir, ready = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
cfg = get_cfg_default()
cfg.DATASET.NAME, cfg.DATASET.ROOT = "BTMRI", root
items = type("BTMRI", (SplitJsonDataset,), {{"spec": None}})(cfg).test[part::2]
cache = FeatureCache(cache_dir, BACKBONE_REGISTRY.get("TinyBiomedCLIP")(), torch.device("cpu"))
spec = transform_spec(cfg, False)
cache._table(cache._path(spec, 0))  # both writers have read the (empty) table before either writes
open(os.path.join(ready, str(part)), "w").close()
while len(os.listdir(ready)) < 2:
    time.sleep(0.02)
cache.get(items, build_transform(cfg, False), spec)
"""


def test_two_writers_at_once_keep_each_others_entries(tmp_path):
    data = make_data(tmp_path / "data", per_class=5)
    cache_dir, ready = tmp_path / "cache", tmp_path / "ready"
    ready.mkdir()
    code = WRITER.format(repo=REPO)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    writers = [subprocess.Popen([sys.executable, "-c", code, str(i), data, str(cache_dir), str(ready)], env=env,
                                stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    for w in writers:
        assert w.wait(timeout=300) == 0, w.stderr.read()[-2000:]
    (table_file,) = [p for p in cache_dir.rglob("*.pt")]
    table = torch.load(table_file)
    items, _ = read_split_items(data)
    assert sorted(table["features"]) == sorted(d.relpath for d in items)
    assert sorted(table["stamps"]) == sorted(table["features"])


# ----- 4. written files follow the umask -----------------------------------------------------------
@pytest.fixture
def umask_002():
    old = os.umask(0o002)
    yield
    os.umask(old)


def test_atomically_written_files_follow_the_umask(synthetic_btmri, tmp_path, umask_002):
    from engine.utils import torch_save_atomic, write_json

    write_json({"a": 1}, tmp_path / "x.json")
    torch_save_atomic({"a": 1}, tmp_path / "x.pt")
    assert oct(os.stat(tmp_path / "x.json").st_mode & 0o777) == "0o664"
    assert oct(os.stat(tmp_path / "x.pt").st_mode & 0o777) == "0o664"
    os.umask(0o077)
    write_json({"a": 1}, tmp_path / "private.json")
    assert os.stat(tmp_path / "private.json").st_mode & 0o777 == 0o600
    os.umask(0o002)
    out, cache = tmp_path / "run", tmp_path / "features"
    assert train.main(args_for(synthetic_btmri, out, "FEATURES.CACHE_DIR", str(cache), shots=3, epochs=1)) == 0
    written = [p for p in [*out.rglob("*"), *cache.rglob("*")] if p.is_file() and not p.name.startswith("log.txt")]
    assert {"results.json", "model.pth.tar-1"} <= {p.name for p in written} and len(written) >= 4
    assert {oct(os.stat(p).st_mode & 0o777) for p in written} == {"0o664"}


# ----- 5. read-only data roots ---------------------------------------------------------------------
def test_read_only_data_root_caches_in_the_user_folder(tmp_path, monkeypatch):
    from engine import utils

    data = make_data(tmp_path / "data", per_class=5)
    dataset_dir = os.path.join(data, "BTMRI")
    for here, dirs, files in os.walk(dataset_dir):
        for name in dirs + files:
            os.chmod(os.path.join(here, name), 0o555 if name in dirs else 0o444)
    os.chmod(dataset_dir, 0o555)
    if os.geteuid() == 0:  # root may write anywhere: judge by the mode bits, as another user's run would
        monkeypatch.setattr(utils, "is_writable_dir", lambda p: not str(p).startswith(dataset_dir))
    user_cache = tmp_path / "user_cache"
    monkeypatch.setenv("BIOMEDCOOP_CACHE", str(user_cache))
    try:
        assert train.main(args_for(data, tmp_path / "run", epochs=1)) == 0
        log = (tmp_path / "run" / "log.txt").read_text()
        assert log.count("is not writable") == 2
        assert sorted(os.listdir(dataset_dir)) == ["BTMRI", "split_BTMRI.json"]  # nothing written there
        assert list(user_cache.glob("split_fewshot/BTMRI-*/shot_2-seed_1.json"))
        assert list(user_cache.glob("feature_cache/BTMRI-*/*/*.pt"))
        # The options still choose the folders.
        opts = ["FEATURES.CACHE_DIR", str(tmp_path / "f"), "DATASET.FEWSHOT_CACHE_DIR", str(tmp_path / "s")]
        assert train.main(args_for(data, tmp_path / "run2", *opts, shots=3, epochs=1)) == 0
        assert (tmp_path / "s" / "shot_3-seed_1.json").is_file() and list((tmp_path / "f").glob("*/*.pt"))
    finally:
        for here, _dirs, _ in os.walk(dataset_dir):
            os.chmod(here, 0o755)


# ----- 8. no dead ends after removing a bad image ---------------------------------------------------
def test_few_shot_cache_naming_a_removed_image_is_redrawn(tmp_path, capsys):
    from datasets.check import check_dataset

    data = make_data(tmp_path / "data", per_class=8)
    assert train.main(args_for(data, tmp_path / "run1", epochs=1, flags=["--no-train"])) == 0
    cache = os.path.join(data, "BTMRI", "split_fewshot", "shot_2-seed_1.json")
    removed = json.load(open(cache))["train"][0][0]
    # What a user does about a corrupt image: delete it and its row from the split file.
    split_path = os.path.join(data, "BTMRI", "split_BTMRI.json")
    split = json.load(open(split_path))
    split["train"] = [row for row in split["train"] if row[0] != removed]
    json.dump(split, open(split_path, "w"))
    os.remove(os.path.join(data, "BTMRI", "BTMRI", removed))

    report = check_dataset("BTMRI", data, progress=False)
    assert report.ok and any("shot_2-seed_1.json" in w and removed in w for w in report.warnings)
    assert train.main(args_for(data, tmp_path / "run2", epochs=1, flags=["--no-train"])) == 0
    assert "drawing this few-shot subset again" in (tmp_path / "run2" / "log.txt").read_text()
    assert removed not in {row[0] for row in json.load(open(cache))["train"]}
    assert all("shot_2-seed_1" not in w for w in check_dataset("BTMRI", data, progress=False).warnings)


# ----- 7. honest downloads --------------------------------------------------------------------------
def test_synthetic_folder_is_not_reported_complete(tmp_path, capsys):
    import download_data

    data = make_data(tmp_path / "data", per_class=5)
    code = download_data.main(["BTMRI", "--root", data, "--base-url", "http://127.0.0.1:9", "--no-gdrive"])
    out = capsys.readouterr()
    assert code == 2 and "already complete" not in out.out
    assert "not the published" in out.err and "Could not download BTMRI" in out.err
    assert os.path.isfile(os.path.join(data, "BTMRI", "split_BTMRI.json"))  # the folder is left as it was


# ----- 14. output a person can read ------------------------------------------------------------------
HELP_PROBE = r"""
import contextlib, io, os, runpy, sys
sys.path[:0] = [{repo!r}, os.path.join({repo!r}, "tools")]
sys.argv = [{path!r}, "--help"]
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        runpy.run_path({path!r}, run_name="__main__")
    except SystemExit:
        pass
print(out.getvalue())
print("HEAVY", [m for m in ("torch", "torchvision", "open_clip", "transformers", "timm") if m in sys.modules])
"""


@pytest.mark.parametrize("tool", ["train.py", "tools/check_data.py", "tools/download_data.py",
                                  "tools/parse_test_res.py", "tools/prepare_dataset.py"])
def test_help_answers_without_loading_torch(tool):
    path = os.path.join(REPO, tool)
    proc = subprocess.run([sys.executable, "-c", HELP_PROBE.format(repo=REPO, path=path)],
                          capture_output=True, text=True, timeout=120, check=True)
    assert "usage:" in proc.stdout and "HEAVY []" in proc.stdout
    if tool == "train.py":  # the example renders as written, one option per line
        assert "--trainer BiomedCoOp_BiomedCLIP \\\n        --dataset-config-file" in proc.stdout


def test_log_lines_never_share_a_line_with_a_progress_bar():
    import fcntl
    import pty
    import struct
    import termios

    code = (f"import sys; sys.path.insert(0, {REPO!r})\n"
            "from tqdm import tqdm\nfrom engine.utils import setup_logger\nlog = setup_logger(None)\n"
            "for i in tqdm(range(3), desc='epochs', leave=False, mininterval=0):\n"
            "    log.info(f'epoch [{i + 1}/3] done')\n")
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=slave, stderr=slave, env=env)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0
    text = out.decode()
    assert "epochs:" in text  # a bar was drawn
    for i in (1, 2, 3):
        at = text.index(f"epoch [{i}/3] done")
        line_start = max(text.rfind("\n", 0, at), text.rfind("\r", 0, at))
        assert line_start == at - 1  # the message starts a fresh (cleared) line ...
        *drawn, cleared, rest = text[text.rfind("\n", 0, at) + 1:at].split("\r")
        # ... right after blanks that cover whatever the bar drew on that line.
        assert rest == "" and not cleared.strip() and len(cleared) >= max(map(len, drawn), default=0)


def test_config_dump_goes_to_log_file_only(synthetic_btmri, tmp_path, capsys):
    assert train.main(args_for(synthetic_btmri, tmp_path / "run", flags=["--no-train"])) == 0
    printed = capsys.readouterr().out
    assert "** Config **" not in printed and "log.txt" in printed
    assert "** Config **" in (tmp_path / "run" / "log.txt").read_text()


# ----- 13. the project cites only its own documents -------------------------------------------------
def test_no_file_cites_the_private_reference_notes():
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    word = "FA" + "CTS"  # spelled apart so this test does not find itself
    citing = []
    for rel in tracked:
        if rel.endswith((".py", ".md", ".yaml", ".sh", ".json", ".txt")) and os.path.isfile(os.path.join(REPO, rel)):
            text = open(os.path.join(REPO, rel), encoding="utf-8", errors="replace").read()
            if f"{word} " in text or f"({word}" in text or f"{word}.md" in text:
                citing.append(rel)
    assert citing == []


# ----- 10. hub access as the hub libraries do it -------------------------------------------------------
REPO_ID = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"


def fake_hf_cache(cache_dir, repo_id: str, filename: str) -> None:
    """The layout huggingface_hub leaves after a download: refs/main -> snapshots/<commit>/<file>."""
    folder = cache_dir / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    (folder / "snapshots" / commit).mkdir(parents=True)
    (folder / "snapshots" / commit / filename).write_text("{}")


def test_offline_hub_uses_a_model_already_in_the_local_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from backbones.base import hub_problem

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    problem = hub_problem(REPO_ID, "open_clip_config.json")
    assert problem and "HF_HUB_OFFLINE" in problem  # the reason is named
    fake_hf_cache(tmp_path / "hub", REPO_ID, "open_clip_config.json")
    assert hub_problem(REPO_ID, "open_clip_config.json") is None


def test_offline_error_names_hf_hub_offline(monkeypatch, capsys, tmp_path):
    from huggingface_hub import constants

    from engine.config import get_cfg_default
    from engine.errors import UserError
    from engine.registry import BACKBONE_REGISTRY

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    cfg = get_cfg_default()
    with pytest.raises(UserError, match="HF_HUB_OFFLINE"):
        BACKBONE_REGISTRY.get("BiomedCLIP")(cfg)


def test_hub_probe_asks_the_configured_endpoint(tmp_path, monkeypatch):
    import http.server
    import threading

    from huggingface_hub import constants

    from backbones.base import hub_problem, hub_reachable

    seen = []

    class Mirror(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            seen.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Mirror)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        assert hub_problem(REPO_ID, "open_clip_config.json") is None
        assert hub_reachable("huggingface.co")
        assert seen and seen[0] == f"/api/models/{REPO_ID}"
        server.shutdown()
        assert "cannot be reached" in hub_problem(REPO_ID, "open_clip_config.json", timeout=1)
    finally:
        server.server_close()


# ----- 15. why the TinyPMCCLIP demo sits at chance (docs/offline.md) --------------------------------
def test_tiny_pmcclip_features_are_separable_but_nearly_parallel_under_a_large_scale(synthetic_btmri):
    from engine.data import build_transform, read_image
    from engine.registry import BACKBONE_REGISTRY

    items, cfg = read_split_items(synthetic_btmri)
    tfm = build_transform(cfg, False)
    images = torch.stack([tfm(read_image(d.impath)) for d in items])
    labels = torch.tensor([d.label for d in items])
    other = labels[:, None] != labels[None, :]
    facts = {}
    for name in ("TinyBiomedCLIP", "TinyPMCCLIP"):
        backbone = BACKBONE_REGISTRY.get(name)().eval()
        with torch.no_grad():
            feats = torch.nn.functional.normalize(backbone.encode_image(images), dim=-1)
        means = torch.nn.functional.normalize(torch.stack([feats[labels == c].mean(0) for c in range(4)]), dim=-1)
        separable = ((feats @ means.T).argmax(1) == labels).float().mean().item()
        facts[name] = (separable, (feats @ feats.T)[other].mean().item(), float(backbone.logit_scale.detach()))
    # Labels and features line up (no order or sign bug): both twins' classes are separable ...
    assert facts["TinyBiomedCLIP"][0] == 1.0 and facts["TinyPMCCLIP"][0] == 1.0
    # ... but PMC-CLIP's twin puts other classes 4% apart (BiomedCLIP's: 24%) under a 6x larger scale.
    assert facts["TinyPMCCLIP"][1] > 0.95 > 0.8 > facts["TinyBiomedCLIP"][1]
    assert abs(facts["TinyPMCCLIP"][2] - 83.9) < 0.1 and facts["TinyBiomedCLIP"][2] < 20


# ----- 16. README "When something goes wrong" --------------------------------------------------------
def test_readme_explains_each_message_the_code_gives():
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    section = readme.split("## When something goes wrong", 1)[1].split("\n## ", 1)[0]
    sources = "".join(open(os.path.join(REPO, p), encoding="utf-8").read() for p in (
        "train.py", "engine/trainer.py", "engine/config.py", "engine/data.py", "engine/features.py",
        "engine/utils.py", "datasets/split_json.py", "datasets/download.py", "tools/parse_test_res.py",
        "backbones/base.py", "scripts/common.sh"))
    for phrase in ["was made with other settings", "Skip this job", "does not record the settings",
                   "was saved with other settings", "The {name} became", "must be val or test",
                   "official split file comes with the", "not the published", "no longer in the split or on disk",
                   "is not writable; caching", "is not in the local Hugging Face cache", "is empty or not valid JSON",
                   "no dataset config for"]:
        assert phrase in sources, phrase  # the message still exists ...
        shown = phrase.replace("The {name} became", "The loss became").split("{")[0]
        assert shown in section, phrase  # ... and the README says what to do about it
