"""Writing a prompt ensemble with an OpenAI-compatible chat endpoint (tools/generate_prompts.py).

For each class: ask POST {base}/chat/completions for modality-specific descriptions, keep the replies
that pass the rules of prompts.checks (SentenceGate), ask again until the class is full or the reply
budget is spent, and rewrite the file atomically after each class so that a stopped run resumes.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import os
import random
import re
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence

from engine.errors import UserError
from engine.prompts import prompt_file, read_prompt_file
from engine.utils import atomic_write_bytes
from prompts.checks import NEAR, SentenceGate, benchmark_classnames, clip_counter, split_classnames

DEFAULT_BASE_URL = "https://api.openai.com/v1"

SYSTEM_PROMPT = (
    "You are an expert radiologist, pathologist and ophthalmologist who writes precise visual descriptions "
    "of medical images. Your descriptions are used as text prompts for a CLIP-style vision-language model, "
    "so each one must describe what can be seen in the image."
)

USER_PROMPT = (
    "Dataset: {dataset}. Imaging modality: {modality}. Classes in this dataset: {classes}.\n"
    'Write {k} different descriptions of how "{classname}" appears in {modality} images.\n'
    "Rules:\n"
    "- exactly one sentence each, at most 35 words;\n"
    "- describe what is visible in this modality (shape, margins, intensity or colour, texture, location, "
    'typical findings), including what tells "{classname}" apart from the other classes;\n'
    '- use the exact term "{classname}" in most of the sentences;\n'
    "- every sentence must say something different; do not reuse one sentence pattern with other words;\n"
    "- no numbering, bullets, quotation marks or any other text.\n"
    "Answer with one sentence per line and nothing else."
)

FOLLOW_UP = "\nThese descriptions already exist; do not repeat or paraphrase them:\n{existing}"


def request_text(dataset: str, modality: str, classnames: Sequence[str], classname: str, k: int,
                 existing: Sequence[str] = ()) -> str:
    text = USER_PROMPT.format(dataset=dataset, modality=modality, classes=", ".join(classnames),
                              classname=classname, k=k)
    if existing:
        text += FOLLOW_UP.format(existing="\n".join(existing))
    return text


# ----- the endpoint --------------------------------------------------------------------------------
class MalformedReply(Exception):
    """A 200 answer that is not a chat completion with text content."""


class EndpointError(UserError):
    """The endpoint refused the request or could not be reached after every retry."""


def reply_content(raw: bytes) -> str:
    try:
        data = json.loads(raw.decode("utf-8"))
        content = data["choices"][0]["message"]["content"]
    except (ValueError, UnicodeDecodeError, KeyError, IndexError, TypeError) as err:
        raise MalformedReply(f"not a chat completion ({err.__class__.__name__}): {raw[:120]!r}") from err
    if not isinstance(content, str) or not content.strip():
        raise MalformedReply("the reply has no text content")
    return content


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: an integer, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class ChatClient:
    """POST {base_url}/chat/completions with retries: exponential backoff, and Retry-After on 429/503."""

    RETRYABLE = {408, 409, 425, 429, 500, 502, 503, 504}

    def __init__(self, base_url: str, model: str, api_key: str = "", timeout: float = 120.0, retries: int = 5,
                 backoff: float = 2.0, max_wait: float = 300.0, temperature: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep, log: Callable[[str], None] = print):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key, self.timeout = model, api_key, timeout
        self.retries, self.backoff, self.max_wait = retries, backoff, max_wait
        self.temperature = temperature
        self.sleep, self.log = sleep, log
        self.requests = 0

    def complete(self, system: str, user: str) -> str:
        body = json.dumps({
            "model": self.model,
            "temperature": self.temperature,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": user}],
        }).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = ""
        for attempt in range(self.retries + 1):
            wait = self.backoff * 2**attempt * (1 + 0.25 * random.random())
            try:
                self.requests += 1
                request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return reply_content(response.read())
            except urllib.error.HTTPError as err:
                try:
                    detail = err.read()[:300].decode("utf-8", "replace").strip()
                except OSError:
                    detail = ""
                if err.code not in self.RETRYABLE:
                    raise EndpointError(self._refusal(err.code, detail)) from err
                hinted = retry_after_seconds(err.headers.get("Retry-After")) if err.headers else None
                if hinted is not None:
                    wait = hinted
                last = f"HTTP {err.code}" + (f" ({detail[:120]})" if detail else "")
            except MalformedReply as err:
                last = f"malformed reply: {err}"
            except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
                reason = getattr(err, "reason", err)
                last = f"connection problem: {reason}"
            if attempt == self.retries:
                break
            wait = min(wait, self.max_wait)
            self.log(f"  {last}; retrying in {wait:.1f} s ({attempt + 1}/{self.retries})")
            self.sleep(wait)
        raise EndpointError(f"{self.url} failed {self.retries + 1} times; last: {last}. Check the base URL "
                            "(--base-url / OPENAI_BASE_URL) and that the server is up, then rerun: finished "
                            "classes are kept.")

    def _refusal(self, code: int, detail: str) -> str:
        hint = {
            400: "the server rejected the request; check --model and the server's API",
            401: "the API key was rejected; set --api-key or OPENAI_API_KEY",
            403: "the API key may not use this model or endpoint",
            404: "no such endpoint or model; check --base-url (it should end before /chat/completions) and --model",
        }.get(code, "the server refused the request")
        return f"{self.url} answered HTTP {code}: {hint}." + (f" Server said: {detail}" if detail else "")


# ----- replies -> sentences ------------------------------------------------------------------------
_BULLET = re.compile(r"^\s*(?:[-*\u2022\u2013]|\(?\d{1,3}[.):]|[a-z][.)])\s+")
_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")
# Lines that talk to the user instead of describing an image.
_CHATTER = re.compile(r"^(?:here (?:are|is)|sure\b|certainly|of course|let me know|i hope|i have|i can|note\b|"
                      r"these (?:are|descriptions|sentences)|below\b|feel free)", re.IGNORECASE)


def parse_sentences(content: str) -> list[str]:
    """Candidate sentences from a reply: a JSON list (or an object holding one), else one per line."""
    text = _FENCE.sub("", content.strip()).strip()
    items: list | None = None
    if text[:1] in "[{":
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            data = next((v for v in data.values() if isinstance(v, list)), None)
        if isinstance(data, list):
            items = [x for x in data if isinstance(x, str)]
    if items is None:
        items = [line for line in text.splitlines() if not line.rstrip().endswith(":")]
    out = []
    for item in items:
        s = " ".join(_BULLET.sub("", item).split()).strip().strip("\"'\u201c\u201d").strip()
        if len(s.split()) < 3 or _CHATTER.match(s):
            continue
        if s[-1] not in ".!?":
            s += "."
        out.append(s[0].upper() + s[1:])
    return out


# ----- the output file -----------------------------------------------------------------------------
def write_ensemble(path: str, dataset: str, modality: str, classes: dict[str, list[str]]) -> None:
    data = {"dataset": dataset, "modality": modality, "classes": classes}
    atomic_write_bytes(path, (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def load_existing(path: str, dataset: str) -> dict[str, list[str]]:
    if not os.path.exists(path):
        return {}
    data = read_prompt_file(path)
    if data.get("dataset") not in (None, dataset):
        raise UserError(f"{path} holds prompts for dataset '{data['dataset']}', not '{dataset}'. "
                        "Choose another --out or the matching --dataset-name.")
    return {k: list(v) for k, v in data["classes"].items()}


def generate(client: ChatClient, dataset: str, modality: str, classnames: Sequence[str], out: str, n: int,
             max_requests: int, near: float = NEAR, log: Callable[[str], None] = print) -> dict[str, list[str]]:
    """Fill every class of `out` up to n sentences; returns the classes. Writes after each class."""
    classes = load_existing(out, dataset)
    counters = [clip_counter()]
    gate = SentenceGate(classes, classnames, counters, near)
    for name in classnames:
        kept = classes.setdefault(name, [])
        if len(kept) >= n:
            log(f"{name}: {len(kept)} sentences already, skipped")
            continue
        rejected: Counter[str] = Counter()
        used, before = 0, len(kept)
        try:
            while len(kept) < n and used < max_requests:
                missing = n - len(kept)
                k = min(n, missing + max(3, missing // 5))  # a few extra: some replies get rejected
                reply = client.complete(SYSTEM_PROMPT, request_text(dataset, modality, classnames, name, k, kept))
                used += 1
                for sentence in parse_sentences(reply):
                    if len(kept) >= n:
                        break
                    why = gate.reason(name, sentence)
                    if why:
                        rejected[why] += 1
                    else:
                        kept.append(sentence)
                        gate.add(name, sentence)
        finally:
            # Even an endpoint failure keeps what this class already got; the next run resumes it.
            if len(kept) > before:
                _save(out, dataset, modality, classnames, classes)
        dropped = ", ".join(f"{v} {k}" for k, v in sorted(rejected.items()))
        status = "done" if len(kept) >= n else f"SHORT after {used} replies (raise --max-requests and rerun)"
        log(f"{name}: {len(kept)}/{n} sentences from {used} replies{f'; rejected {dropped}' if dropped else ''}"
            f" - {status}")
    if not os.path.exists(out):
        _save(out, dataset, modality, classnames, classes)
    return classes


def _save(out: str, dataset: str, modality: str, classnames: Sequence[str], classes: dict[str, list[str]]) -> None:
    order = list(classnames) + [c for c in classes if c not in classnames]
    write_ensemble(out, dataset, modality, {c: classes[c] for c in order if c in classes})


def resolve_task(dataset_name: str | None = None, from_dataset: str | None = None, classes: str | None = None,
                 root: str | None = None, modality: str | None = None, out: str | None = None
                 ) -> tuple[str, str, list[str], str]:
    """(dataset name, modality, class strings, output path) from the command's options; UserError when
    incomplete. `classes` is comma-separated; `from_dataset` reads ROOT/NAME/split_NAME.json (or, without
    `root`, a benchmark's class table)."""
    from datasets.benchmarks import BENCHMARKS

    name = dataset_name or from_dataset
    if not name:
        raise UserError("Name the dataset: --dataset-name NAME (with --classes) or --from-dataset NAME.")
    spec = BENCHMARKS.get(name)
    if classes and from_dataset:
        raise UserError("Give the classes one way: --classes or --from-dataset, not both.")
    if classes:
        classnames = [c.strip() for c in classes.split(",") if c.strip()]
    elif from_dataset:
        if root:
            split = os.path.join(os.path.expanduser(root), from_dataset, f"split_{from_dataset}.json")
            classnames = split_classnames(split)
        elif BENCHMARKS.get(from_dataset):
            classnames = benchmark_classnames(from_dataset)
        else:
            raise UserError(f"'{from_dataset}' is not a benchmark: give --root DATA so that "
                            f"DATA/{from_dataset}/split_{from_dataset}.json can be read.")
    elif spec:
        classnames = list(spec.classnames)
    else:
        raise UserError("No classes: pass --classes a,b,c or --from-dataset NAME --root DATA.")
    if len(set(classnames)) != len(classnames) or not classnames:
        raise UserError(f"The class list {classnames} is empty or repeats a class.")
    modality = modality or (spec.modality if spec else "")
    if not modality:
        raise UserError("Say which images these are: --modality 'e.g. chest X-ray'.")
    return name, modality, classnames, out or prompt_file(name)
