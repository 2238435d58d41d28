"""tools/download_weights.py against a local HTTP server (127.0.0.1) that mimics the hub.

Large hub files are served the way huggingface.co serves LFS files: a redirect that carries
X-Linked-Size and X-Linked-Etag (the SHA-256), then the bytes from another path.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import threading

import download_weights
import pytest

from backbones.weights import (
    MANIFEST,
    RemoteFile,
    downloadable_models,
    family_files,
    is_complete,
    locate_weights,
    read_manifest,
)
from engine.config import get_cfg_default

PMC = "/datasets/axiong/pmc_oa/resolve/main/"
BERT = "/microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract/resolve/main/"
PUBMED = "/sarahESL/PubMedCLIP/resolve/main/PubMedCLIP_ViT32.pth"


class Hub:
    """Path -> bytes; `lfs` paths answer with a redirect carrying size and SHA-256, like the hub."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.lfs: set[str] = set()
        self.etag_override: dict[str, str] = {}
        self.short: set[str] = set()  # announce more bytes than are sent
        self.hits: list[str] = []

    def add(self, path: str, data: bytes, lfs: bool = False) -> None:
        self.files[path] = data
        if lfs:
            self.lfs.add(path)


def _handler(hub: Hub):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def do_GET(self):
            path = self.path
            hub.hits.append(path)
            if path in hub.lfs:
                data = hub.files[path]
                self.send_response(302)
                self.send_header("Location", "/cdn" + path)
                self.send_header("X-Linked-Size", str(len(data)))
                etag = hub.etag_override.get(path, hashlib.sha256(data).hexdigest())
                self.send_header("X-Linked-Etag", f'"{etag}"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            real = path.removeprefix("/cdn")
            if real not in hub.files:
                self.send_error(404, "Entry not found")
                return
            data = hub.files[real]
            self.send_response(200)
            self.send_header("Content-Length", str(len(data) + (10 if real in hub.short else 0)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


@pytest.fixture()
def hub(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    state = Hub()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


def serve_pmcclip(hub: Hub) -> dict[str, bytes]:
    contents = {
        "text_encoder.pth": b"text weights " * 5000,
        "image_encoder(resnet50).pth": b"image weights " * 7000,
        "text_projection_layer.pth": b"projection",
        "text/config.json": b'{"model_type": "bert"}',
        "text/vocab.txt": b"[PAD]\n[UNK]\n",
        "text/tokenizer_config.json": b'{"do_lower_case": true}',
    }
    for rel, data in contents.items():
        if rel.startswith("text/"):
            hub.add(BERT + rel[5:], data)
        else:
            hub.add(PMC + rel, data, lfs=True)
    return contents


def no_leftovers(folder) -> bool:
    return not any(name.endswith(".part") for _, _, files in os.walk(folder) for name in files)


def test_downloads_every_file_of_a_family_then_skips_complete_ones(hub, tmp_path, capsys):
    contents = serve_pmcclip(hub)
    argv = ["PMCCLIP", "--dir", str(tmp_path), "--hf-endpoint", hub.url, "--quiet"]
    assert download_weights.main(argv) == 0
    folder = tmp_path / "PMCCLIP"
    for rel, data in contents.items():
        assert (folder / rel).read_bytes() == data
    manifest = read_manifest(str(folder))
    assert set(manifest) == set(contents)
    assert manifest["text_encoder.pth"]["sha256"] == hashlib.sha256(contents["text_encoder.pth"]).hexdigest()
    assert no_leftovers(tmp_path)
    assert "BIOMEDCOOP_WEIGHTS_DIR" in capsys.readouterr().out

    hits = len(hub.hits)
    assert download_weights.main(argv) == 0  # everything complete: no request at all
    assert len(hub.hits) == hits

    (folder / "text_projection_layer.pth").write_bytes(b"trunc")  # a damaged file is fetched again
    assert download_weights.main(argv) == 0
    assert (folder / "text_projection_layer.pth").read_bytes() == b"projection"
    assert len(hub.hits) == hits + 2  # redirect + bytes of that one file


def test_sha256_mismatch_leaves_nothing_behind(hub, tmp_path, capsys):
    hub.add(PUBMED, b"pubmedclip weights", lfs=True)
    hub.etag_override[PUBMED] = "0" * 64
    assert download_weights.main(["PubMedCLIP", "--dir", str(tmp_path), "--hf-endpoint", hub.url, "--quiet"]) == 1
    assert "SHA-256" in capsys.readouterr().err
    assert not (tmp_path / "PubMedCLIP" / "PubMedCLIP_ViT32.pth").exists() and no_leftovers(tmp_path)


def test_truncated_download_leaves_nothing_behind(hub, tmp_path, capsys):
    hub.add(PUBMED, b"pubmedclip weights")
    hub.short.add(PUBMED)
    assert download_weights.main(["PubMedCLIP", "--dir", str(tmp_path), "--hf-endpoint", hub.url, "--quiet"]) == 1
    assert PUBMED in capsys.readouterr().err
    assert not (tmp_path / "PubMedCLIP" / "PubMedCLIP_ViT32.pth").exists() and no_leftovers(tmp_path)


def test_openai_file_is_checked_against_the_sha256_in_its_url(hub, tmp_path, capsys):
    (remote,) = family_files("CLIP", {"openai": hub.url})
    assert remote.sha256 and remote.sha256 in remote.url  # OpenAI's URL embeds the file's SHA-256
    hub.add(remote.url.removeprefix(hub.url), b"not the real ViT-B-16")
    assert download_weights.main(["CLIP", "--dir", str(tmp_path), "--openai-endpoint", hub.url, "--quiet"]) == 1
    assert remote.sha256 in capsys.readouterr().err
    assert not (tmp_path / "CLIP" / "ViT-B-16.pt").exists() and no_leftovers(tmp_path)


def test_missing_file_names_its_url(hub, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BIOMEDCOOP_HF_ENDPOINT", hub.url)  # the environment variable works as well
    assert download_weights.main(["PubMedCLIP", "--dir", str(tmp_path), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "404" in err and hub.url + PUBMED in err


def test_offline_download_leaves_no_empty_weights_folder(tmp_path, capsys):
    dead = "http://127.0.0.1:9"  # port 9: nothing listens, as on a machine without internet
    target = tmp_path / "WEIGHTS" / "new"
    assert download_weights.main(["PubMedCLIP", "--dir", str(target), "--hf-endpoint", dead, "--quiet"]) == 1
    assert "127.0.0.1:9" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []  # neither WEIGHTS/new/PubMedCLIP nor the folders above it
    kept = tmp_path / "kept"
    (kept / "BiomedCLIP").mkdir(parents=True)  # folders that were there before are the user's: kept
    argv = ["PubMedCLIP", "hf-hub:org/name", "--dir", str(kept), "--hf-endpoint", dead, "--quiet"]
    assert download_weights.main(argv) == 1
    assert os.listdir(kept) == ["BiomedCLIP"]


def test_help_lists_the_downloadable_presets():
    assert download_weights.presets() == downloadable_models()
    assert "BiomedCLIP" in download_weights.presets() and not any(m.startswith("Tiny") for m in downloadable_models())


def test_a_hand_copied_file_with_a_known_sha256_counts_as_complete(tmp_path):
    data = b"weights copied by hand"
    (tmp_path / "w.pt").write_bytes(data)
    assert not is_complete(str(tmp_path), RemoteFile("http://x/w.pt", "w.pt"))  # unknown provenance: fetch
    assert not is_complete(str(tmp_path), RemoteFile("http://x/w.pt", "w.pt", "0" * 64))
    assert is_complete(str(tmp_path), RemoteFile("http://x/w.pt", "w.pt", hashlib.sha256(data).hexdigest()))
    assert read_manifest(str(tmp_path))["w.pt"]["size"] == len(data)  # verified once, recorded
    assert (tmp_path / MANIFEST).exists()


def test_loaders_find_a_completed_download_in_the_cache_without_network(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("BIOMEDCOOP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("BIOMEDCOOP_HF_ENDPOINT", hub.url)
    monkeypatch.delenv("BIOMEDCOOP_WEIGHTS_DIR", raising=False)
    serve_pmcclip(hub)
    assert download_weights.main(["PMCCLIP", "--dir", str(tmp_path / "cache" / "weights"), "--quiet"]) == 0
    assert locate_weights(get_cfg_default(), "PMCCLIP") == str(tmp_path / "cache" / "weights" / "PMCCLIP")
