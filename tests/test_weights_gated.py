"""tools/download_weights.py and gated models, against a local hub (127.0.0.1) that gates a repository
the way huggingface.co does: 401 without a token, 403 for a token whose account has not accepted the
licence (both with X-Error-Code: GatedRepo), large files redirected to a CDN on another host.

The token comes from huggingface_hub's own resolution (HF_TOKEN, else the `hf auth login` file), is
sent to the hub only, and a refusal gives one line and leaves nothing in the target folder.
"""

from __future__ import annotations

import hashlib
import http.server
import threading

import download_weights
import huggingface_hub.constants
import pytest

REPO = "example-org/gated-siglip"
RENAMED = "old-org/gated-siglip"  # redirects to REPO
GOOD, OTHER = "hf_accepted_licence", "hf_not_accepted"
FILES = {"config.json": b'{"model_type": "siglip"}', "model.safetensors": b"weights " * 4000,
         "tokenizer.json": b'{"version": "1.0"}'}
LFS = {"model.safetensors"}


class _Quiet(http.server.BaseHTTPRequestHandler):
    """A handler that logs nothing and answers with one call."""

    def log_message(self, *args):
        pass

    def reply(self, status: int, body: bytes = b"", **headers) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server:
    """A hub (gating REPO, or only the files in `gated_files`) and a CDN; both record each request's token."""

    def __init__(self):
        self.gated_files = set(FILES)
        self.hub_hits: list[tuple[str, str | None]] = []
        self.cdn_hits: list[tuple[str, str | None]] = []
        self._servers = []
        self.cdn = self._start(self._cdn_handler())
        self.url = self._start(self._hub_handler())

    def _start(self, handler) -> str:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self._servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    def close(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()

    def _hub_handler(self):
        state = self

        class Hub(_Quiet):
            def do_GET(self):
                auth = self.headers.get("Authorization")
                state.hub_hits.append((self.path, auth))
                if self.path.startswith(f"/{RENAMED}/"):  # a renamed repository: the hub redirects on its own host
                    return self.reply(307, Location=self.path.replace(RENAMED, REPO, 1))
                prefix = f"/{REPO}/resolve/main/"
                name = self.path.removeprefix(prefix)
                if not self.path.startswith(prefix) or name not in FILES:
                    return self.reply(404, **{"X-Error-Code": "EntryNotFound"})
                if name in state.gated_files and auth != f"Bearer {GOOD}":
                    return self.reply(401 if auth is None else 403, **{
                        "X-Error-Code": "GatedRepo", "X-Error-Message": f"Access to model {REPO} is restricted."})
                data = FILES[name]
                if name in LFS:  # as the hub serves large files: size and SHA-256 on a redirect to the CDN
                    return self.reply(302, Location=f"{state.cdn}/blobs/{name}", **{
                        "X-Linked-Size": str(len(data)), "X-Linked-Etag": f'"{hashlib.sha256(data).hexdigest()}"'})
                self.reply(200, data)

        return Hub

    def _cdn_handler(self):
        state = self

        class Cdn(_Quiet):
            def do_GET(self):
                state.cdn_hits.append((self.path, self.headers.get("Authorization")))
                self.reply(200, FILES[self.path.removeprefix("/blobs/")])

        return Cdn


@pytest.fixture()
def server(monkeypatch, tmp_path):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    # No token from this machine unless a test gives one: no HF_TOKEN, an empty login file.
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", False)
    state = Server()
    yield state
    state.close()


def run(server, target) -> int:
    return download_weights.main([REPO, "--dir", str(target), "--hf-endpoint", server.url, "--quiet"])


def test_the_token_in_hf_token_reaches_the_hub_and_not_the_cdn(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", GOOD)
    assert run(server, tmp_path / "WEIGHTS") == 0
    folder = tmp_path / "WEIGHTS" / "example-org--gated-siglip"
    for name, data in FILES.items():
        assert (folder / name).read_bytes() == data
    assert server.hub_hits and all(auth == f"Bearer {GOOD}" for _, auth in server.hub_hits)
    assert server.cdn_hits == [("/blobs/model.safetensors", None)]  # the token stays with the hub's host


def test_the_token_of_hf_auth_login_is_used_without_hf_token(server, tmp_path):
    login_file = tmp_path / "hf-home" / "token"  # where `hf auth login` writes it (HF_HOME/token)
    login_file.parent.mkdir()
    login_file.write_text(GOOD + "\n")
    assert run(server, tmp_path / "WEIGHTS") == 0
    assert {auth for _, auth in server.hub_hits} == {f"Bearer {GOOD}"}


@pytest.mark.parametrize("token,status", [(None, 401), (OTHER, 403)])
@pytest.mark.parametrize("gated_files", ["all", "weights only"])
def test_a_refusal_is_one_line_with_the_steps_and_leaves_nothing(server, tmp_path, monkeypatch, capsys,
                                                                   token, status, gated_files):
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    if gated_files == "weights only":  # config.json and the tokenizer arrive before the refusal
        server.gated_files = {"model.safetensors"}
    target = tmp_path / "WEIGHTS"
    assert run(server, target) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    for phrase in (f"{REPO} is gated", f"HTTP {status}", f"accept its licence on {server.url}/{REPO}",
                   "hf auth login", "HF_TOKEN", "run this command again"):
        assert phrase in err, phrase
    assert ("no Hugging Face token was found" in err) == (token is None)
    assert not target.exists()  # neither the model's folder nor WEIGHTS, which this run made


def test_a_refusal_keeps_what_the_folder_held_before(server, tmp_path):
    folder = tmp_path / "WEIGHTS" / "example-org--gated-siglip"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    assert run(server, tmp_path / "WEIGHTS") == 1
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]  # no .part, nothing new


def test_only_files_on_the_hugging_face_endpoint_carry_the_token():
    from backbones.weights import family_files

    assert all(not f.hub for f in family_files("CLIP"))  # OpenAI's server
    assert all(f.hub for f in family_files("PMCCLIP")) and all(f.hub for f in family_files("BiomedCLIP"))


def test_the_token_follows_a_redirect_within_the_hub(server, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", GOOD)
    assert download_weights.main([RENAMED, "--dir", str(tmp_path), "--hf-endpoint", server.url, "--quiet"]) == 0
    assert (tmp_path / "old-org--gated-siglip" / "model.safetensors").read_bytes() == FILES["model.safetensors"]
    assert any(path.startswith(f"/{RENAMED}/") for path, _ in server.hub_hits)
    assert {auth for _, auth in server.hub_hits} == {f"Bearer {GOOD}"}
    assert {auth for _, auth in server.cdn_hits} == {None}
