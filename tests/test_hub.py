"""Sharing runs on the Hub: tools/push_to_hub.py uploads to a local server (127.0.0.1) that speaks the
endpoints huggingface_hub's create_repo / upload_folder / snapshot_download use, then predict and
train.py --eval-only load the repository back (and again offline, from the cache) and reproduce the
run's accuracy."""

from __future__ import annotations

import base64
import csv
import hashlib
import http.server
import json
import os
import re
import threading
from urllib.parse import unquote, urlparse

import predict
import push_to_hub
import pytest
import yaml

import train
from engine.errors import UserError
from engine.hub import is_hub_ref, parse_ref

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class HubRepos:
    """Model repositories the local server holds: {repo id: {path: bytes}}, one commit id per state."""

    def __init__(self):
        self.files: dict[str, dict[str, bytes]] = {}
        self.commits: dict[str, str] = {}
        self.requests: list[str] = []
        self.lock = threading.Lock()

    def commit(self, repo: str, files: dict[str, bytes]) -> str:
        with self.lock:
            self.files.setdefault(repo, {}).update(files)
            state = json.dumps({p: hashlib.sha1(d).hexdigest() for p, d in sorted(self.files[repo].items())})
            self.commits[repo] = hashlib.sha1(state.encode()).hexdigest()
            return self.commits[repo]


def _handler(hub: HubRepos):
    api = re.compile(r"^/api/models/([^/]+/[^/]+)/(preupload|commit|revision|tree)/([^/?]+)(?:/(.*))?$")
    resolve = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def reply(self, status: int, body=b"", headers=None, head=False):
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if not head:
                self.wfile.write(data)

        def body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_POST(self):
            path = urlparse(self.path).path
            hub.requests.append(f"POST {path}")
            data = self.body()
            if path == "/api/repos/create":
                spec = json.loads(data)
                repo = f"{spec['organization']}/{spec['name']}"
                hub.files.setdefault(repo, {})
                return self.reply(200, {"url": f"{hub.url}/{repo}", "name": repo})
            if path == "/api/validate-yaml":
                return self.reply(200, {"errors": [], "warnings": []})
            match = api.match(path)
            if not match or match.group(1) not in hub.files:
                return self.reply(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            repo, kind = match.group(1), match.group(2)
            if kind == "preupload":  # every file goes inline in the commit (no LFS round trip)
                files = json.loads(data)["files"]
                return self.reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                                  for f in files]})
            added = {}
            for line in data.splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    added[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            sha = hub.commit(repo, added)
            return self.reply(200, {"commitUrl": f"{hub.url}/{repo}/commit/{sha}", "commitOid": sha,
                                    "success": True})

        def answer_get(self, head: bool):
            path = unquote(urlparse(self.path).path)
            hub.requests.append(f"{'HEAD' if head else 'GET'} {path}")
            match = api.match(path)
            if match and match.group(1) in hub.files and match.group(2) in ("revision", "tree"):
                repo, files = match.group(1), hub.files[match.group(1)]
                sha = hub.commits.get(repo, "0" * 40)
                if match.group(2) == "revision":
                    return self.reply(200, {"id": repo, "sha": sha, "private": False,
                                            "siblings": [{"rfilename": p} for p in sorted(files)]}, head=head)
                return self.reply(200, [{"type": "file", "path": p, "size": len(d), "oid": hashlib.sha1(d).hexdigest()}
                                        for p, d in sorted(files.items())], head=head)
            match = resolve.match(path)
            if match and match.group(1) in hub.files and match.group(3) in hub.files[match.group(1)]:
                repo, data = match.group(1), hub.files[match.group(1)][match.group(3)]
                headers = {"X-Repo-Commit": hub.commits[repo], "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                           "Content-Type": "application/octet-stream"}
                return self.reply(200, data, headers, head=head)
            return self.reply(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"}, head=head)

        def do_GET(self):
            self.answer_get(head=False)

        def do_HEAD(self):
            self.answer_get(head=True)

    return Handler


@pytest.fixture()
def hub(monkeypatch, tmp_path):
    """The local hub, with huggingface_hub pointed at it and online for this test only (its cache in tmp_path)."""
    from huggingface_hub import constants

    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    state = HubRepos()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("HF_ENDPOINT", state.url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setenv("BIOMEDCOOP_CACHE", str(tmp_path / "cache"))
    yield state
    server.shutdown()
    server.server_close()


def go_offline(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def train_argv(root, out, *extra, seed=1):
    return ["--root", str(root), "--seed", str(seed), "--trainer", "CoOp_TinyBiomedCLIP",
            "--dataset-config-file", os.path.join(REPO, "configs/datasets/btmri.yaml"),
            "--config-file", os.path.join(REPO, "configs/trainers/CoOp/vit_b16.yaml"),
            "--output-dir", str(out), "DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "2",
            "DATALOADER.NUM_WORKERS", "0", "TRAIN.REPORT_TO", "none", *extra]


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_refs_parse_and_refuse_a_bare_name():
    assert parse_ref("hf-hub:org/name") == ("org/name", None, "")
    assert parse_ref("hf-hub:org/name@v1/btmri/shots_4/seed1") == ("org/name", "v1", "btmri/shots_4/seed1")
    assert is_hub_ref("hf-hub:org/name") and not is_hub_ref("output/run")
    with pytest.raises(UserError, match="hf-hub:ORG/NAME"):
        parse_ref("hf-hub:name")


def test_push_then_predict_and_evaluate_from_the_hub_reproduce_the_run(synthetic_btmri, tmp_path, hub, monkeypatch,
                                                                        capsys):
    run = tmp_path / "output" / "btmri" / "shots_2" / "CoOp_TinyBiomedCLIP" / "nctx4_cscFalse_ctpend" / "seed1"
    assert train.main(train_argv(synthetic_btmri, run)) == 0
    record = json.loads((run / "results.json").read_text())
    assert push_to_hub.main([str(run), "--repo", "test-org/coop-btmri", "--token", "hf_test"]) == 0
    assert "pushed CoOp on BTMRI (K=2, seed 1" in capsys.readouterr().out
    files = hub.files["test-org/coop-btmri"]
    assert set(files) == {"README.md", "config.json", "results.json", "prompt_learner/model.safetensors"}
    from safetensors.torch import load

    assert list(load(files["prompt_learner/model.safetensors"])) == ["ctx"]  # learned tensors only
    assert json.loads(files["config.json"]) == record["config"]
    card = files["README.md"].decode()
    meta = front_matter(card)
    (result,) = meta["model-index"][0]["results"]
    assert result["task"]["type"] == "image-classification" and result["dataset"]["name"] == "BTMRI"
    assert result["metrics"][0]["type"] == "accuracy"
    assert result["metrics"][0]["value"] == pytest.approx(record["accuracy"], abs=1e-4)
    from engine.runs import settings_digest

    assert settings_digest(record["config"]) in card and "Zhou et al., IJCV 2022" in card
    assert "tools/predict.py --run hf-hub:test-org/coop-btmri" in card and "@inproceedings" in card

    # Evaluate the pushed weights with train.py, the eval scripts' path: the same accuracy.
    evaluated = tmp_path / "eval"
    argv = train_argv(synthetic_btmri, evaluated)
    argv[argv.index("--output-dir"):argv.index("--output-dir")] = ["--eval-only", "--model-dir",
                                                                   "hf-hub:test-org/coop-btmri"]
    assert train.main(argv) == 0
    again = json.loads((evaluated / "results.json").read_text())
    assert again["accuracy"] == record["accuracy"] and again["per_class_accuracy"] == record["per_class_accuracy"]
    assert again["config"]["run.model_dir"] == "hf-hub:test-org/coop-btmri"

    # Predict from the hub ref as from the run folder, then again offline from the cache: no request is made.
    from engine.predict import Predictor

    local = Predictor(str(run))
    images = [item.impath for item in local.trainer.dm.dataset.test[:6]]
    local_rows = local.predict(images)
    csv_path = tmp_path / "remote.csv"
    assert predict.main(["--run", "hf-hub:test-org/coop-btmri", *images, "--out", str(csv_path)]) == 0
    with open(csv_path, encoding="utf-8") as f:
        remote = list(csv.DictReader(f))
    assert [r["top1"] for r in remote] == [r["top1"] for r in local_rows]
    assert [float(r["top1_probability"]) for r in remote] == pytest.approx(
        [r["top1_probability"] for r in local_rows], abs=1e-5)
    go_offline(monkeypatch)
    seen = len(hub.requests)
    assert Predictor("hf-hub:test-org/coop-btmri").predict(images) == local_rows and len(hub.requests) == seen


def test_a_grid_goes_to_one_repository_per_method_and_dataset(synthetic_btmri, tmp_path, hub, capsys):
    out = tmp_path / "output"
    sub = "btmri/shots_2/CoOp_TinyBiomedCLIP/nctx4_cscFalse_ctpend"
    for seed in (1, 2):
        assert train.main(train_argv(synthetic_btmri, out / sub / f"seed{seed}", seed=seed)) == 0
    zero = out / "btmri/shots_2/ZeroShot_TinyBiomedCLIP/nctx4_cscFalse_ctpend/seed1"
    argv = train_argv(synthetic_btmri, zero)
    argv[argv.index("CoOp_TinyBiomedCLIP")] = "ZeroShot_TinyBiomedCLIP"
    argv[argv.index(os.path.join(REPO, "configs/trainers/CoOp/vit_b16.yaml"))] = os.path.join(
        REPO, "configs/trainers/ZeroShot/vit_b16.yaml")
    assert train.main(argv) == 0
    capsys.readouterr()
    assert push_to_hub.main([str(out), "--grid", "--org", "test-org", "--token", "hf_test"]) == 0
    assert "pushed 2 run(s) to test-org/CoOp-BTMRI" in capsys.readouterr().out
    assert set(hub.files) == {"test-org/CoOp-BTMRI"}  # the zero-shot run learned nothing to share
    files = hub.files["test-org/CoOp-BTMRI"]
    for seed in (1, 2):
        assert {f"{sub}/seed{seed}/results.json", f"{sub}/seed{seed}/prompt_learner/model.safetensors"} <= set(files)
    results = front_matter(files["README.md"].decode())["model-index"][0]["results"]
    records = {s: json.loads(files[f"{sub}/seed{s}/results.json"]) for s in (1, 2)}
    metrics = {m["name"]: m["value"] for r in results for m in r["metrics"]}  # same task and dataset: one result
    assert metrics == {f"test accuracy, K=2, seed {s} ({sub}/seed{s})": pytest.approx(records[s]["accuracy"], abs=1e-4)
                       for s in (1, 2)}

    # One seed of the grid repository, as the eval scripts name it (MODEL_ROOT=hf-hub:ORG/NAME).
    evaluated = tmp_path / "eval"
    argv = train_argv(synthetic_btmri, evaluated, seed=2)
    argv[argv.index("--output-dir"):argv.index("--output-dir")] = [
        "--eval-only", "--model-dir", f"hf-hub:test-org/CoOp-BTMRI/{sub}/seed2"]
    assert train.main(argv) == 0
    assert json.loads((evaluated / "results.json").read_text())["accuracy"] == records[2]["accuracy"]


def test_what_cannot_be_pushed_gets_one_line(synthetic_btmri, tmp_path, hub, capsys, monkeypatch):
    assert push_to_hub.main([str(tmp_path / "nothing"), "--repo", "test-org/x"]) == 2
    assert "results.json is missing: push finished runs only" in capsys.readouterr().err
    run = tmp_path / "run"
    assert train.main(train_argv(synthetic_btmri, run)) == 0
    assert push_to_hub.main([str(run), "--repo", "not a repo"]) == 2
    assert "--repo must be ORG/NAME" in capsys.readouterr().err
    assert push_to_hub.main([str(run)]) == 2
    assert "Give --repo ORG/NAME" in capsys.readouterr().err
    go_offline(monkeypatch)
    assert push_to_hub.main([str(run), "--repo", "test-org/x"]) == 2  # the quick start exports HF_HUB_OFFLINE=1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "HF_HUB_OFFLINE is set" in err[0] and "your token" not in err[0]
    argv = train_argv(synthetic_btmri, tmp_path / "eval")
    argv[argv.index("--output-dir"):argv.index("--output-dir")] = ["--eval-only", "--model-dir",
                                                                   "hf-hub:test-org/never-pushed"]
    assert train.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Cannot get hf-hub:test-org/never-pushed" in err[0] and "HF_HUB_OFFLINE" in err[0]
    assert not (tmp_path / "eval").exists()


def test_the_eval_script_evaluates_a_pushed_grid(synthetic_btmri, tmp_path, hub, capsys):
    import subprocess
    import sys

    out = tmp_path / "output"
    sub = "btmri/shots_2/BiomedCoOp_TinyBiomedCLIP/nctx4_cscFalse_ctpend"
    argv = train_argv(synthetic_btmri, out / sub / "seed1")
    argv[argv.index("CoOp_TinyBiomedCLIP")] = "BiomedCoOp_TinyBiomedCLIP"
    argv[argv.index(os.path.join(REPO, "configs/trainers/CoOp/vit_b16.yaml"))] = os.path.join(
        REPO, "configs/trainers/BiomedCoOp/few_shot/btmri.yaml")
    assert train.main(argv) == 0
    assert push_to_hub.main([str(out), "--grid", "--org", "test-org", "--token", "hf_test"]) == 0
    from huggingface_hub import constants

    env = {**os.environ, "SEEDS": "1", "LOAD_EPOCH": "2", "EVAL_ROOT": str(tmp_path / "eval"), "PYTHON": sys.executable,
           "MODEL_ROOT": "hf-hub:test-org/BiomedCoOp-BTMRI", "HF_HUB_CACHE": constants.HF_HUB_CACHE,
           "EXTRA_OPTS": "OPTIM.MAX_EPOCH 2 DATALOADER.NUM_WORKERS 0", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(["bash", os.path.join(REPO, "scripts/biomedcoop/eval_fewshot.sh"), synthetic_btmri, "btmri",
                           "2", "TinyBiomedCLIP"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    evaluated = json.loads((tmp_path / "eval" / sub / "seed1" / "results.json").read_text())
    trained = json.loads((out / sub / "seed1" / "results.json").read_text())
    assert evaluated["accuracy"] == trained["accuracy"] and evaluated["eval_only"] is True
    assert evaluated["config"]["run.model_dir"] == f"hf-hub:test-org/BiomedCoOp-BTMRI/{sub}/seed1"
