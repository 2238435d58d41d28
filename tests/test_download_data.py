"""tools/download_data.py (datasets.download) against a local HTTP server (127.0.0.1, in a thread) serving
a synthetic zip."""

from __future__ import annotations

import io
import os
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import download_data
import pytest
from make_synthetic_dataset import write_dataset

from datasets import download as fetch
from engine.config import get_cfg_default
from engine.registry import DATASET_REGISTRY


def zip_folder(folder: str, arcroot: str) -> bytes:
    """Zip `folder` as the HuggingFace archives are laid out: NAME/NAME/<class>/..., NAME/split_NAME.json."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for here, _, files in os.walk(folder):
            for f in sorted(files):
                path = os.path.join(here, f)
                zf.write(path, os.path.join(arcroot, os.path.relpath(path, folder)))
    return buf.getvalue()


class Server:
    """Serves {"/NAME.zip": bytes}; honours Range unless told not to; can drop the connection early."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.honour_range = True
        self.cut_after: int | None = None  # send only this many bytes of the body, then close
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                if rng and server.honour_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                payload = body[start:]
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if server.cut_after is not None:
                    payload = payload[: server.cut_after]
                self.wfile.write(payload)
                self.wfile.flush()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def busi_zip(tmp_path_factory) -> bytes:
    src = str(tmp_path_factory.mktemp("src"))
    write_dataset(src, "BUSI", per_class=6, size=16)
    return zip_folder(os.path.join(src, "BUSI"), "BUSI")


@pytest.fixture
def server(busi_zip):
    s = Server()
    s.files["/BUSI.zip"] = busi_zip
    yield s
    s.close()


def run(root, server, *extra) -> int:
    return download_data.main(["BUSI", "--root", str(root), "--base-url", server.url, "--no-gdrive", *extra])


def assert_readable(root) -> None:
    cfg = get_cfg_default()
    cfg.DATASET.ROOT, cfg.DATASET.NAME = str(root), "BUSI"
    ds = DATASET_REGISTRY.get("BUSI")(cfg)
    assert ds.classnames == ["benign tumor", "malignant tumor", "normal scan"]
    assert len(ds.train_x) + len(ds.val) + len(ds.test) == 18


def leftovers(root) -> list[str]:
    return sorted(n for n in os.listdir(root) if n != "BUSI")


def test_download_unpacks_into_the_reader_layout(tmp_path, server):
    assert run(tmp_path, server) == 0
    assert_readable(tmp_path)
    assert leftovers(tmp_path) == []  # no zip, no .part, no temp folder
    assert server.requests == [("/BUSI.zip", None)]


def test_rerun_on_a_complete_dataset_does_nothing(tmp_path, server, capsys):
    assert run(tmp_path, server) == 0
    (tmp_path / "BUSI" / "split_fewshot").mkdir()  # caches next to the data survive
    assert run(tmp_path, server) == 0
    assert len(server.requests) == 1
    assert "already complete" in capsys.readouterr().out
    assert (tmp_path / "BUSI" / "split_fewshot").is_dir()


def test_partial_download_resumes_with_range(tmp_path, server, busi_zip):
    server.cut_after = 1000
    assert run(tmp_path, server) == 2  # connection dropped: the .part stays for the next run
    assert os.path.getsize(tmp_path / "BUSI.zip.part") == 1000
    assert not (tmp_path / "BUSI").exists()
    server.cut_after = None
    assert run(tmp_path, server) == 0
    assert server.requests[-1] == ("/BUSI.zip", "bytes=1000-")
    assert_readable(tmp_path)
    assert leftovers(tmp_path) == []


def test_server_without_range_support_restarts_cleanly(tmp_path, server, busi_zip):
    (tmp_path / "BUSI.zip.part").write_bytes(b"stale bytes from another file")
    server.honour_range = False
    assert run(tmp_path, server) == 0
    assert server.requests[-1][1] is not None  # it asked to resume, got the whole file, started over
    assert_readable(tmp_path)


def test_corrupt_archive_leaves_nothing_half_unpacked(tmp_path, server, busi_zip, capsys):
    server.files["/BUSI.zip"] = busi_zip[: len(busi_zip) // 2] + b"\0" * (len(busi_zip) - len(busi_zip) // 2)
    assert run(tmp_path, server) == 2
    err = capsys.readouterr().err
    assert "BUSI" in err and "zip" in err
    assert leftovers(tmp_path) == [] and not (tmp_path / "BUSI").exists()


def test_archive_with_the_wrong_layout_is_named(tmp_path, server):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("something/else.txt", "hello")
    server.files["/BUSI.zip"] = buf.getvalue()
    with pytest.raises(fetch.UserError, match="split_BUSI.json"):
        fetch.download("BUSI", str(tmp_path), server.url, use_gdrive=False)
    assert not (tmp_path / "BUSI").exists()
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".BUSI.unpack")]


def test_archive_without_the_outer_folder_is_accepted(tmp_path, server, busi_zip):
    flat = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(busi_zip)) as src, zipfile.ZipFile(flat, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename.split("/", 1)[1], src.read(info))  # BUSI/x -> x
    server.files["/BUSI.zip"] = flat.getvalue()
    assert run(tmp_path, server) == 0
    assert_readable(tmp_path)
    assert leftovers(tmp_path) == []


def test_incomplete_copy_is_repaired(tmp_path, server):
    assert run(tmp_path, server) == 0
    victim = next((tmp_path / "BUSI" / "BUSI" / "normal_scan").iterdir())
    victim.unlink()
    assert run(tmp_path, server) == 0
    assert victim.is_file() and len(server.requests) == 2
    assert_readable(tmp_path)


def test_zip_placed_by_hand_is_used_without_network(tmp_path, busi_zip):
    (tmp_path / "BUSI.zip").write_bytes(busi_zip)
    assert download_data.main(["busi", "--root", str(tmp_path), "--base-url", "http://127.0.0.1:9", "--no-gdrive"]) == 0
    assert_readable(tmp_path)


def test_no_network_gives_one_message_with_url_and_destination(tmp_path, monkeypatch, capsys):
    def offline_gdown(file_id, part):
        raise fetch.DownloadFailed(f"Google Drive id {file_id}: no network")

    monkeypatch.setattr(fetch, "gdrive_download", offline_gdown)
    monkeypatch.setenv(fetch.BASE_URL_ENV, "http://127.0.0.1:9/mirror")  # port 9: nothing listens
    assert download_data.main(["BTMRI", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1
    assert "http://127.0.0.1:9/mirror/BTMRI.zip" in err
    assert "1_lJLZRUmczqZqoN-dNqkAzGzmi4ONoU5" in err
    assert str(tmp_path / "BTMRI.zip") in err
    assert os.listdir(tmp_path) == []


def test_google_drive_fallback_when_the_mirror_fails(tmp_path, server, busi_zip, monkeypatch):
    del server.files["/BUSI.zip"]  # the mirror answers 404
    fetched = []

    def fake_gdown(file_id, target):
        fetched.append(file_id)
        with open(target, "wb") as f:
            f.write(busi_zip)

    monkeypatch.setattr(fetch, "gdrive_download", fake_gdown)
    assert download_data.main(["BUSI", "--root", str(tmp_path), "--base-url", server.url]) == 0
    assert fetched == ["1hB5M7wcAUTV9EtiYrijACoQ36R6VmQaa"]
    assert_readable(tmp_path)
    assert leftovers(tmp_path) == []


def test_all_and_names_are_resolved():
    assert fetch.expand_names(["all"]) == list(fetch.BENCHMARKS)
    assert fetch.expand_names(["covid", "BUSI", "busi"]) == ["COVID_19", "BUSI"]
    with pytest.raises(fetch.UserError, match="Unknown benchmark"):
        fetch.expand_names(["nope"])
    assert fetch.DEFAULT_BASE_URL + "/BTMRI.zip" == fetch.spec_for("BTMRI").url
