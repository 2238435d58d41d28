"""Prompt-ensemble tools: check_prompts (shipped files + planted violations), generate_prompts against a
local fake chat server, inspect_prompts against the trainer's own selection rule."""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import check_prompts
import generate_prompts
import inspect_prompts
import pytest
import torch

from datasets.benchmarks import BENCHMARKS
from engine.errors import UserError
from engine.prompts import PROMPTS_DIR, load_ensemble, read_prompt_file
from prompts import generate
from prompts.checks import SentenceGate, check_ensemble, check_file, clip_counter
from trainers.prompt_bank import select_prompts


@pytest.fixture(scope="module")
def counters():
    return [clip_counter()]


def _write(path, data) -> str:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    return str(path)


# ----- check_prompts -------------------------------------------------------------------------------
def test_shipped_ensembles_pass(capsys):
    assert check_prompts.main([]) == 0
    out = capsys.readouterr().out
    assert "11 file(s), 56 classes, 2800 sentences: 0 error(s)" in out
    for name, spec in BENCHMARKS.items():
        assert f"{name}  (" in out
        for classname in spec.classnames:
            assert classname in out


def test_bert_lengths_with_a_local_vocab(tmp_path, capsys):
    from backbones.twins import toy_vocab

    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(toy_vocab()) + "\n")
    assert check_prompts.main(["BTMRI", "--bert-vocab", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "BERT max/256" in out and "CLIP max/77" in out
    assert check_prompts.main(["BTMRI", "--bert-vocab", str(tmp_path / "nowhere")]) == 2
    assert "no vocab.txt" in capsys.readouterr().err


def _planted(tmp_path) -> str:
    data = read_prompt_file(os.path.join(PROMPTS_DIR, "BTMRI.json"))
    classes = data["classes"]
    glioma, meningioma = classes["glioma tumor"], classes["meningioma tumor"]
    del classes["normal brain"]  # missing class
    classes["pituitary tumor"] = classes["pituitary tumor"][:30]  # too few
    glioma[3] = "A glioma tumor " + "with irregular, heterogeneous and ill-defined enhancing margins " * 6 + "."
    glioma[4] = glioma[1]  # exact duplicate
    glioma[5] = glioma[7].replace("butterfly-shaped", "wing-shaped")  # near duplicate
    meningioma[9] = glioma[0].replace("glioma tumor", "meningioma tumor")  # template swap
    meningioma[10] = "The mass is round. It enhances brightly."  # two sentences
    return _write(tmp_path / "BTMRI.json", data)


def test_planted_violations_reported(tmp_path, capsys):
    path = _planted(tmp_path)
    assert check_prompts.main(["BTMRI", "--file", path]) == 1
    out = capsys.readouterr().out
    for kind, detail in [
        ("missing-class", "'normal brain'"),
        ("too-few", "'pituitary tumor' has 30 sentences"),
        ("too-long", "'glioma tumor' [3]"),
        ("duplicate", "'glioma tumor' [4] repeats [1]"),
        ("near-duplicate", "'glioma tumor' [7]"),
        ("template-swap", "'glioma tumor' [0], 'meningioma tumor' [9]"),
        ("not-one-sentence", "'meningioma tumor' [10]"),
    ]:
        line = next((x for x in out.splitlines() if f"ERROR   [{kind}]" in x), "")
        assert detail in line, (kind, out)
    assert "FAILED (BTMRI)" in out
    # The same file in a folder, found by dataset name.
    assert check_prompts.main(["BTMRI", "--dir", str(tmp_path)]) == 1


def test_check_rules_directly(counters):
    ok = {"alpha": ["The alpha lesion is round and dark.", "Alpha shows a thin bright rim around a cyst."],
          "beta": ["Beta appears as a wide flat plaque.", "Such plaques have a coarse speckled texture."]}
    report = check_ensemble(ok, ["alpha", "beta"], min_count=2, counters=counters)
    assert report.ok and not report.warnings
    assert [c.naming for c in report.classes] == [1.0, 0.5]
    # Case differs from the dataset's string: an error, although the loader would accept it.
    report = check_ensemble({"Alpha": ok["alpha"], "beta": ok["beta"]}, ["alpha", "beta"], min_count=2)
    assert [i.kind for i in report.errors] == ["class-string"]
    # An extra class is a warning only.
    report = check_ensemble({**ok, "gamma": ok["beta"][:1]}, ["alpha", "beta"], min_count=1)
    assert "extra-class" in [i.kind for i in report.warnings]
    # Sentences of two classes that stay alike once names are replaced: a warning.
    similar = {"alpha": ["The alpha lesion is round and dark with a rim."],
               "beta": ["The beta lesion is round and dark with a thin rim."]}
    report = check_ensemble(similar, ["alpha", "beta"], min_count=1)
    assert report.ok and [i.kind for i in report.warnings] == ["similar-across-classes"]
    # The incremental gate applies the same rules.
    gate = SentenceGate(ok, ["alpha", "beta"], counters)
    assert gate.reason("alpha", "The alpha lesion is round and dark!") == "duplicate"
    assert gate.reason("beta", "The beta lesion is round and dark.") == "template-swap"
    assert gate.reason("alpha", "Alpha shows a thin bright rim around the cyst.") == "near-duplicate"
    assert gate.reason("alpha", "One. Two more words here.") == "not-one-sentence"
    assert gate.reason("alpha", "alpha" + " alpha" * 80 + ".") == "too-long"
    assert gate.reason("alpha", "Alpha lesions cluster near the lower border of the organ.") is None


def test_check_usage_errors(tmp_path, capsys):
    assert check_prompts.main(["NoSuchData"]) == 2
    assert "No prompt file" in capsys.readouterr().err
    bad = tmp_path / "BTMRI.json"
    bad.write_text('{"dataset": "BTMRI", "classes": {"glioma tumor": "not a list"}}')
    assert check_prompts.main(["BTMRI", "--dir", str(tmp_path)]) == 1
    assert "[schema]" in capsys.readouterr().out
    with pytest.raises(UserError, match="not a list"):
        load_ensemble("BTMRI", ["glioma tumor"], 1, directory=str(tmp_path))
    # A non-benchmark dataset checked against the classes of its split file.
    split = _write(tmp_path / "split.json", {"train": [["a/1.png", 0, "alpha"], ["b/1.png", 1, "beta"]]})
    prompts = _write(tmp_path / "Mine.json", {"dataset": "Mine", "modality": "toy", "classes": {
        "alpha": ["The alpha lesion is round and dark."]}})
    assert check_prompts.main(["Mine", "--file", prompts, "--split", split, "--min", "1"]) == 1
    assert "class 'beta' of Mine has no prompts" in capsys.readouterr().out


# ----- generate_prompts against a fake endpoint ---------------------------------------------------
def canned_sentence(classname: str, i: int) -> str:
    rng = random.Random(zlib.crc32(f"{classname}|{i}".encode()))
    words = ["".join(rng.choice("bcdfghklmnprstvz") + rng.choice("aeiou") for _ in range(3)) for _ in range(8)]
    return f"The {classname} shows {' '.join(words)}."


class FakeChat:
    """A local OpenAI-style /chat/completions server: scripted failures first, then canned sentences."""

    def __init__(self, script=(), stuck=()):
        self.script = list(script)  # ("429", retry_after) or ("malformed",) or ("401",)
        self.stuck = set(stuck)  # classes that only ever get duplicates
        self.calls: list[dict] = []
        self.cursor: dict[str, int] = {}
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.calls.append({"t": time.monotonic(), "path": self.path, "auth": self.headers.get("Authorization"),
                                   "body": body})
                step = fake.script.pop(0) if fake.script else None
                if step and step[0] == "429":
                    self._send(429, b'{"error": "slow down"}', {"Retry-After": str(step[1])})
                elif step and step[0] == "401":
                    self._send(401, b'{"error": "bad key"}')
                elif step and step[0] == "malformed":
                    self._send(200, b"<html>this is not a chat completion</html>")
                else:
                    self._send(200, json.dumps({"choices": [{"message": {"role": "assistant",
                                                                         "content": fake.reply(body)}}]}).encode())

            def _send(self, code, payload, headers=None):
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def reply(self, body) -> str:
        user = body["messages"][-1]["content"]
        classname = re.search(r'descriptions of how "([^"]+)"', user).group(1)
        if classname in self.stuck:
            return "\n".join([canned_sentence(classname, 0)] * 3)
        start = self.cursor.get(classname, 0)
        fresh = [canned_sentence(classname, i) for i in range(start, start + 4)]
        self.cursor[classname] = start + 4
        # Decorations to strip, one repeat, one near repeat, one over-long sentence and one chatty line.
        near = fresh[0][:-1] + " too."
        long = f"The {classname} " + "shows many tiny details " * 20 + "."
        if start % 8 == 0:
            return "Here are the descriptions:\n" + "\n".join(
                f"{k + 1}. {s}" for k, s in enumerate(fresh + [fresh[1], near, long]))
        return "```json\n" + json.dumps(fresh + [fresh[2]]) + "\n```"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def requests_for(self, classname: str) -> int:
        return sum(f'descriptions of how "{classname}"' in c["body"]["messages"][-1]["content"] for c in self.calls)


CLASSES = ["alpha lesion", "beta lesion", "normal gamma"]


def _generate(fake, out, *extra) -> int:
    return generate_prompts.main([
        "--dataset-name", "Toy", "--modality", "toy MRI", "--classes", ",".join(CLASSES), "--n", "10",
        "--out", str(out), "--base-url", fake.url, "--model", "fake-model", "--api-key", "sk-test",
        "--backoff", "0.01", "--retries", "3", *extra,
    ])


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


def test_generator_against_fake_server(tmp_path, capsys, counters):
    out = tmp_path / "Toy.json"
    with FakeChat(script=[("429", 1), ("malformed",)]) as fake:
        assert _generate(fake, out) == 0
    calls = fake.calls
    assert calls[1]["t"] - calls[0]["t"] >= 0.9  # Retry-After: 1 honoured
    assert all(c["path"] == "/v1/chat/completions" and c["auth"] == "Bearer sk-test" for c in calls)
    assert calls[0]["body"]["model"] == "fake-model"
    system, user = calls[0]["body"]["messages"]
    assert system["content"] == generate.SYSTEM_PROMPT
    assert user["content"] == generate.request_text("Toy", "toy MRI", CLASSES, CLASSES[0], 10)
    assert "do not repeat or paraphrase" in calls[-1]["body"]["messages"][-1]["content"]
    data = read_prompt_file(str(out))
    assert data["dataset"] == "Toy" and data["modality"] == "toy MRI" and list(data["classes"]) == CLASSES
    for classname in CLASSES:
        assert data["classes"][classname] == [canned_sentence(classname, i) for i in range(10)]
        # 4 new sentences per reply: kept asking until 10; the 429 and malformed replies came on alpha's first ask.
        assert fake.requests_for(classname) == (5 if classname == "alpha lesion" else 3)
    assert check_file(str(out), "Toy", CLASSES, counters, min_count=10).ok
    printed = capsys.readouterr().out
    assert "HTTP 429" in printed and "malformed reply" in printed
    assert "rejected" in printed and "near-duplicate" in printed and "too-long" in printed


def test_generator_resumes_and_stops(tmp_path, capsys):
    out = tmp_path / "Toy.json"
    done = [canned_sentence("alpha lesion", i) for i in range(10)]
    partial = [canned_sentence("beta lesion", 100 + i) for i in range(3)]
    _write(out, {"dataset": "Toy", "modality": "toy MRI", "classes": {"alpha lesion": done, "beta lesion": partial}})
    with FakeChat(stuck={"normal gamma"}) as fake:
        assert _generate(fake, out, "--max-requests", "3") == 1  # normal gamma stays short
    assert fake.requests_for("alpha lesion") == 0  # complete classes are skipped
    assert fake.requests_for("normal gamma") == 3  # bounded attempts
    classes = read_prompt_file(str(out))["classes"]
    assert classes["alpha lesion"] == done
    assert classes["beta lesion"][:3] == partial and len(classes["beta lesion"]) == 10
    assert classes["normal gamma"] == [canned_sentence("normal gamma", 0)]
    printed = capsys.readouterr().out
    assert "normal gamma: 1/10 sentences from 3 replies" in printed and "'normal gamma' has 1 sentences" in printed


def test_generator_user_errors(tmp_path, capsys):
    out = tmp_path / "Toy.json"
    with FakeChat(script=[("401",)]) as fake:
        assert _generate(fake, out) == 2
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "API key" in err and err.count("error:") == 1
    assert not out.exists()  # nothing was gained, so nothing is written
    with FakeChat(script=[None, ("401",)]) as fake:  # fails mid-class: what the class got is kept
        assert _generate(fake, out) == 2
    assert read_prompt_file(str(out))["classes"] == {"alpha lesion": [canned_sentence("alpha lesion", i)
                                                                      for i in range(4)]}
    capsys.readouterr()
    _write(out, {"dataset": "Other", "modality": "x", "classes": {"a": ["A a."]}})
    with FakeChat() as fake:
        assert _generate(fake, out) == 2
    assert "holds prompts for dataset 'Other'" in capsys.readouterr().err and not fake.calls
    assert generate_prompts.main(["--dataset-name", "Toy", "--classes", "a,b", "--model", "m"]) == 2
    assert "--modality" in capsys.readouterr().err


def test_generator_classes_from_split(synthetic_btmri, capsys):
    rc = generate_prompts.main(["--from-dataset", "BTMRI", "--root", synthetic_btmri, "--dry-run"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "Classes in this dataset: glioma tumor, meningioma tumor, pituitary tumor, normal brain." in printed
    assert 'how "glioma tumor" appears in brain MRI images' in printed


def test_reply_parsing():
    parse = generate.parse_sentences
    assert parse('["one two three", "four five six."]') == ["One two three.", "Four five six."]
    assert parse('{"descriptions": ["a b c."]}') == ["A b c."]
    assert parse("Sure, here they are:\n1) a b c\n- \"d e f.\"\n\n* g h i.\nok\nLet me know if you need more.") == [
        "A b c.", "D e f.", "G h i."]
    assert generate.retry_after_seconds("7") == 7.0
    assert generate.retry_after_seconds(None) is None


# ----- inspect_prompts ------------------------------------------------------------------------------
def test_inspect_prompts_table(synthetic_btmri, tmp_path, capsys):
    out = tmp_path / "scores.json"
    rc = inspect_prompts.main(["BTMRI", "--root", synthetic_btmri, "--model", "TinyBiomedCLIP", "--shots", "4",
                               "--seed", "1", "--images", "8", "--tau", "1.0", "--cpu", "--json", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    rows = {int(m.group(1)): m.group(2) for m in re.finditer(r"^\s+(\d+)\s+\S+\s+\S+\s+(keep|DROP)\s", printed, re.M)}
    assert sorted(rows) == list(range(50))
    scores = torch.tensor([p["score"] for p in result["prompts"]])
    expected = select_prompts(scores, 1.0)
    assert [rows[i] == "keep" for i in range(50)] == expected.tolist()
    assert [p["kept"] for p in result["prompts"]] == expected.tolist()
    assert 0 < int(expected.sum()) < 50  # the table shows both outcomes
    assert f"kept {int(expected.sum())} of 50 prompt(s)" in printed
    assert "Dropped prompts" in printed and len(result["images"]) == 8
    assert inspect_prompts.main(["NoSuchData", "--root", synthetic_btmri, "--model", "TinyBiomedCLIP"]) == 2
