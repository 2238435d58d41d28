"""The rules of a prompt ensemble (clip_prompts/README.md): what tools/check_prompts.py reports and what
tools/generate_prompts.py admits.

An ensemble is {classname: [sentence, ...]}. Errors break a rule; warnings are worth a look but do
not fail a check. Sentence positions are 0-based indices: index i is prompt i of load_ensemble.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import combinations

from engine.errors import UserError
from engine.prompts import prompt_file, read_prompt_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_MIN = 50
CLIP_CONTEXT = 77  # CLIP's context length, start and end tokens included
NEAR = 0.7  # within a class: word-set or character-trigram Jaccard at or above this is a near-duplicate
ACROSS_NEAR = 0.8  # across classes (names replaced): at or above this is a warning
PLACEHOLDER = "{}"

ERROR, WARNING = "error", "warning"

_WORD = re.compile(r"[a-z0-9{}]+")
# A sentence end followed by the start of another sentence; common abbreviations are masked first.
_BREAK = re.compile(r"[.!?]\s+(?=[A-Z0-9(\"'])")
_ABBREV = re.compile(r"\b(?:e\.g|i\.e|vs|etc|approx|cf|fig|no|dr|st|mr|ms|ca)\.", re.IGNORECASE)


# ----- text fingerprints ---------------------------------------------------------------------------
def normalise(text: str) -> str:
    """Lowercase words joined by single spaces: exact duplicates modulo case, spacing and punctuation."""
    return " ".join(_WORD.findall(text.lower()))


def jaccard(a: frozenset, b: frozenset) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def jaccard_at_least(a: frozenset, b: frozenset, threshold: float) -> float | None:
    """jaccard(a, b) if it is at least `threshold`, else None (skipped cheaply when sizes rule it out)."""
    small, large = sorted((len(a), len(b)))
    if large and small / large < threshold:
        return None
    value = jaccard(a, b)
    return value if value >= threshold else None


@dataclass(frozen=True)
class Fingerprint:
    key: str  # normalised text
    words: frozenset
    grams: frozenset  # character trigrams of the normalised text

    @classmethod
    def of(cls, text: str) -> Fingerprint:
        key = normalise(text)
        return cls(key, frozenset(key.split()), frozenset(key[i : i + 3] for i in range(max(len(key) - 2, 1))))

    def similarity(self, other: Fingerprint) -> float:
        """The larger of word-set and character-trigram Jaccard similarity."""
        return max(jaccard(self.words, other.words), jaccard(self.grams, other.grams))


def name_pattern(names: Iterable[str]) -> re.Pattern | None:
    """Matches any of the class names (or their underscore forms) as whole words, longest first."""
    variants = {v for n in names if n for v in (n, n.replace("_", " "), n.replace(" ", "_"))}
    if not variants:
        return None
    alternatives = "|".join(re.escape(v) for v in sorted(variants, key=len, reverse=True))
    return re.compile(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])", re.IGNORECASE)


def templated(text: str, pattern: re.Pattern | None) -> str:
    """The sentence with every class name replaced by a placeholder, normalised."""
    return normalise(pattern.sub(PLACEHOLDER, text) if pattern else text)


def names_class(text: str, classname: str) -> bool:
    pattern = name_pattern([classname])
    return bool(pattern and pattern.search(text))


def sentence_problem(text: str) -> str | None:
    """Why `text` is not one single-line sentence, or None."""
    if not text.strip():
        return "empty sentence"
    if "\n" in text or "\r" in text:
        return "contains a line break"
    if text != text.strip():
        return "leading or trailing whitespace"
    if _BREAK.search(_ABBREV.sub("abbrev", text)):
        return "more than one sentence"
    return None


def short(text: str, width: int = 90) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


# ----- token counters ------------------------------------------------------------------------------
@dataclass
class TokenCounter:
    """Counts tokens of sentences (special tokens included) for one tokenizer; `limit` is its context length."""

    name: str
    limit: int
    _count: object = field(repr=False)

    def count(self, texts: Sequence[str]) -> list[int]:
        return self._count(list(texts))


def clip_counter() -> TokenCounter:
    """CLIP's BPE tokenizer; open_clip ships its vocabulary, so this always works offline."""
    from open_clip.tokenizer import SimpleTokenizer

    tok = SimpleTokenizer()
    return TokenCounter("CLIP", CLIP_CONTEXT, lambda texts: [len(tok.encode(t)) + 2 for t in texts])


def _biomedclip_text_cfg() -> dict:
    with open(os.path.join(REPO, "backbones", "configs", "BiomedCLIP.json"), encoding="utf-8") as f:
        return json.load(f)


def find_bert_vocabs(extra: Sequence[str] = ()) -> tuple[list[tuple[str, str]], list[str]]:
    """(label, vocab.txt path) of every BERT vocabulary found on this machine, and notes on the rest.

    Looks at explicit paths, the BiomedCLIP weights folder ($BIOMEDCOOP_WEIGHTS_DIR) and the local
    Hugging Face cache; never touches the network.
    """
    found: list[tuple[str, str]] = []
    notes: list[str] = []
    for path in extra:
        vocab = os.path.join(path, "vocab.txt") if os.path.isdir(path) else path
        if not os.path.isfile(vocab):
            raise UserError(f"--bert-vocab {path}: no vocab.txt there. Give a vocab.txt file or its folder.")
        found.append(("BERT" if not found else f"BERT{len(found) + 1}", vocab))
    from backbones.twins import cache_root

    # tools/download_weights.py layout: <DIR>/BiomedCLIP/text/vocab.txt, DIR = $BIOMEDCOOP_WEIGHTS_DIR or
    # the download cache.
    roots = [r for r in (os.environ.get("BIOMEDCOOP_WEIGHTS_DIR"), os.path.join(cache_root(), "weights")) if r]
    local = [os.path.join(r, sub, "vocab.txt") for r in roots for sub in ("BiomedCLIP/text", "BiomedCLIP")]
    hit = next((v for v in local if os.path.isfile(v)), None)
    if hit:
        found.append(("BiomedCLIP", hit))
    if not any(label == "BiomedCLIP" for label, _ in found):
        config = _biomedclip_text_cfg()
        text_cfg = config.get("model_cfg", {}).get("text_cfg", {})
        repos = [r for r in (config.get("hub_id", "").removeprefix("hf-hub:"), text_cfg.get("hf_tokenizer_name")) if r]
        try:
            from huggingface_hub import try_to_load_from_cache

            for repo in repos:
                hit = try_to_load_from_cache(repo, "vocab.txt")
                if isinstance(hit, str) and os.path.isfile(hit):
                    found.append(("BiomedCLIP", hit))
                    break
        except Exception:  # an unreadable cache is the same as no cache here
            pass
    if not any(label == "BiomedCLIP" for label, _ in found):
        notes.append(
            "BiomedCLIP (PubMedBERT) token lengths not checked: its vocab.txt is not on this machine "
            "(looked in $BIOMEDCOOP_WEIGHTS_DIR/BiomedCLIP, the download cache and the Hugging Face cache; "
            "or pass --bert-vocab)."
        )
    return found, notes


def bert_counter(label: str, vocab: str, limit: int | None = None) -> TokenCounter:
    from tokenizers import BertWordPieceTokenizer

    tok = BertWordPieceTokenizer(vocab, lowercase=True)
    if limit is None:
        limit = int(_biomedclip_text_cfg().get("model_cfg", {}).get("text_cfg", {}).get("context_length", 256))
    return TokenCounter(label, limit, lambda texts: [len(e.ids) for e in tok.encode_batch(texts)])


def default_counters(bert_vocabs: Sequence[str] = ()) -> tuple[list[TokenCounter], list[str]]:
    vocabs, notes = find_bert_vocabs(bert_vocabs)
    return [clip_counter()] + [bert_counter(label, path) for label, path in vocabs], notes


# ----- reports -------------------------------------------------------------------------------------
@dataclass
class Issue:
    severity: str  # ERROR or WARNING
    kind: str  # missing-class, too-few, too-long, duplicate, near-duplicate, template-swap, ...
    classname: str
    message: str


@dataclass
class ClassStats:
    classname: str
    count: int
    max_tokens: dict[str, int] = field(default_factory=dict)  # tokenizer name -> longest sentence
    naming: float = 0.0  # share of sentences that contain the class name
    errors: int = 0
    warnings: int = 0


@dataclass
class Report:
    dataset: str
    path: str
    modality: str = ""
    classes: list[ClassStats] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    counters: list[tuple[str, int]] = field(default_factory=list)  # (tokenizer name, its limit)

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == ERROR]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    def add(self, severity: str, kind: str, classname: str, message: str) -> None:
        self.issues.append(Issue(severity, kind, classname, message))


def check_ensemble(
    classes: dict[str, list[str]],
    expected: Sequence[str] | None,
    dataset: str = "",
    path: str = "",
    min_count: int = DEFAULT_MIN,
    near: float = NEAR,
    across_near: float = ACROSS_NEAR,
    counters: Sequence[TokenCounter] = (),
    report: Report | None = None,
) -> Report:
    """Every rule on an ensemble; `expected` is the dataset's class list (None: coverage not checked)."""
    report = report or Report(dataset, path)
    report.counters = [(c.name, c.limit) for c in counters]
    # Coverage: the exact class strings of the dataset.
    if expected is not None:
        by_folded: dict[str, list[str]] = {}
        for key in classes:
            by_folded.setdefault(key.replace("_", " ").lower(), []).append(key)
        for name in expected:
            if name in classes:
                continue
            near_keys = by_folded.get(name.replace("_", " ").lower())
            if near_keys:
                report.add(ERROR, "class-string", name,
                           f"class '{name}' is spelled {near_keys[0]!r} in the file; use the dataset's exact string")
            else:
                report.add(ERROR, "missing-class", name, f"class '{name}' of {dataset or 'the dataset'} has no prompts")
        wanted = {n.replace("_", " ").lower() for n in expected}
        for key in classes:
            if key.replace("_", " ").lower() not in wanted:
                report.add(WARNING, "extra-class", key, f"class '{key}' is not a class of {dataset or 'the dataset'}"
                           " (unused by training)")
    for folded, keys in _folded_collisions(classes).items():
        report.add(ERROR, "ambiguous-class", keys[0],
                   f"classes {keys} differ only in case or '_' ('{folded}'); the loader cannot tell them apart")

    pattern = name_pattern(list(classes) + list(expected or []))
    templates: dict[str, list[tuple[str, int]]] = {}
    prints: dict[str, list[tuple[int, Fingerprint]]] = {}
    for name, sentences in classes.items():
        stats = ClassStats(name, len(sentences))
        before = len(report.issues)
        if len(sentences) < min_count:
            report.add(ERROR, "too-few", name, f"'{name}' has {len(sentences)} sentences; at least {min_count} needed")
        for i, text in enumerate(sentences):
            problem = sentence_problem(text)
            if problem:
                report.add(ERROR, "not-one-sentence", name, f"'{name}' [{i}]: {problem}: {short(text)!r}")
        for counter in counters:
            lengths = counter.count(sentences) if sentences else []
            stats.max_tokens[counter.name] = max(lengths, default=0)
            for i, n in enumerate(lengths):
                if n > counter.limit:
                    report.add(ERROR, "too-long", name, f"'{name}' [{i}]: {n} {counter.name} tokens > "
                               f"{counter.limit}: {short(sentences[i])!r}")
        fps = [Fingerprint.of(t) for t in sentences]
        seen: dict[str, int] = {}
        for i, fp in enumerate(fps):
            if fp.key in seen:
                report.add(ERROR, "duplicate", name,
                           f"'{name}' [{i}] repeats [{seen[fp.key]}]: {short(sentences[i])!r}")
            else:
                seen[fp.key] = i
        for (i, a), (j, b) in combinations(enumerate(fps), 2):
            if a.key != b.key and (sim := a.similarity(b)) >= near:
                report.add(ERROR, "near-duplicate", name, f"'{name}' [{j}] is {sim:.0%} similar to [{i}]: "
                           f"{short(sentences[j], 70)!r} ~ {short(sentences[i], 70)!r}")
        prints[name] = []
        for i, text in enumerate(sentences):
            key = templated(text, pattern)
            templates.setdefault(key, []).append((name, i))
            prints[name].append((i, Fingerprint.of(key)))
        stats.naming = sum(names_class(t, name) for t in sentences) / len(sentences) if sentences else 0.0
        report.classes.append(stats)
        stats.errors = sum(1 for x in report.issues[before:] if x.severity == ERROR)
        stats.warnings = len(report.issues) - before - stats.errors
    # Templates: the same sentence in two classes once class names are replaced by a placeholder.
    for where in templates.values():
        owners = sorted({c for c, _ in where})
        if len(owners) > 1:
            places = ", ".join(f"'{c}' [{i}]" for c, i in where)
            text = classes[where[0][0]][where[0][1]]
            for c in owners:
                _bump(report, c, ERROR)
            report.add(ERROR, "template-swap", owners[0],
                       f"the same sentence with the class name swapped in {places}: {short(text)!r}")
    names = list(prints)
    for x, y in combinations(names, 2):
        for i, a in prints[x]:
            for j, b in prints[y]:
                if a.key == b.key or (sim := jaccard_at_least(a.words, b.words, across_near)) is None:
                    continue
                _bump(report, x, WARNING)
                _bump(report, y, WARNING)
                report.add(WARNING, "similar-across-classes", x,
                           f"'{x}' [{i}] and '{y}' [{j}] are {sim:.0%} alike once class names "
                           f"are replaced; make sure it is not a template: {short(classes[x][i], 70)!r}")
    return report


def _bump(report: Report, classname: str, severity: str) -> None:
    for stats in report.classes:
        if stats.classname == classname:
            if severity == ERROR:
                stats.errors += 1
            else:
                stats.warnings += 1


def _folded_collisions(classes: dict[str, list[str]]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for key in classes:
        groups.setdefault(key.replace("_", " ").lower(), []).append(key)
    return {k: v for k, v in groups.items() if len(v) > 1}


def _duplicate_keys(path: str) -> list[str]:
    dupes: list[str] = []

    def hook(pairs):
        keys = [k for k, _ in pairs]
        dupes.extend(sorted({k for k in keys if keys.count(k) > 1}))
        return dict(pairs)

    try:
        with open(path, encoding="utf-8") as f:
            json.load(f, object_pairs_hook=hook)
    except (OSError, ValueError):
        return []
    return dupes


def check_file(
    path: str, dataset: str, expected: Sequence[str] | None, counters: Sequence[TokenCounter] = (), **kwargs
) -> Report:
    """Read a prompt file with the loader's own reader, then check every rule; schema errors become issues."""
    report = Report(dataset, path)
    try:
        data = read_prompt_file(path)
    except UserError as err:
        report.add(ERROR, "schema", "", str(err))
        return report
    report.modality = data.get("modality", "")
    for key in ("dataset", "modality"):
        if key not in data:
            report.add(ERROR, "schema", "", f"the file has no '{key}' field")
    if dataset and data.get("dataset") not in (None, dataset):
        report.add(WARNING, "dataset-name", "", f"the file says dataset '{data['dataset']}', checked as '{dataset}'")
    unknown = sorted(set(data) - {"dataset", "modality", "classes"})
    if unknown:
        report.add(WARNING, "schema", "", f"unknown top-level key(s) {unknown} are ignored")
    for key in _duplicate_keys(path):
        report.add(ERROR, "duplicate-key", key, f"the key '{key}' appears twice in the file; JSON keeps only the last")
    return check_ensemble(data["classes"], expected, dataset, path, counters=counters, report=report, **kwargs)


# ----- expected classes ----------------------------------------------------------------------------
def split_classnames(path: str) -> list[str]:
    """Class strings of a split JSON ({"train": [[relpath, label, classname], ...], ...}) in label order."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError as err:
        raise UserError(f"Split file not found: {path}.") from err
    except (OSError, ValueError) as err:
        raise UserError(f"Cannot read the split file {path}: {err}") from err
    labels: dict[int, str] = {}
    try:
        for part in ("train", "val", "test"):
            for _, label, classname in data.get(part, []):
                labels.setdefault(int(label), str(classname))
    except (TypeError, ValueError, AttributeError) as err:
        raise UserError(f"{path}: expected {{'train': [[relpath, label, classname], ...], ...}} ({err}).") from err
    if not labels:
        raise UserError(f"{path} lists no images, so it names no classes.")
    return [labels[k] for k in sorted(labels)]


def benchmark_classnames(dataset: str) -> list[str] | None:
    from datasets.benchmarks import BENCHMARKS

    spec = BENCHMARKS.get(dataset)
    return list(spec.classnames) if spec else None


def check_jobs(datasets: Sequence[str], directory: str, file: str | None = None, split: str | None = None,
               root: str | None = None) -> list[tuple[str, str, list[str] | None, str | None]]:
    """(dataset, prompt file, expected classes or None, note) per dataset; no names = the 11 benchmarks.

    Expected classes come from `split`, else the benchmark table, else ROOT/NAME/split_NAME.json.
    """
    from datasets.benchmarks import BENCHMARKS, spec_for

    names = list(datasets) or list(BENCHMARKS)
    if (file or split) and len(names) != 1:
        raise UserError("--file and --split apply to one dataset: name exactly one DATASET with them.")
    jobs = []
    for name in names:
        expected, note = None, None
        if split:
            expected = split_classnames(split)
        else:
            try:
                name = spec_for(name).name  # btmri -> BTMRI
                expected = benchmark_classnames(name)
            except UserError:
                if root:
                    expected = split_classnames(os.path.join(os.path.expanduser(root), name, f"split_{name}.json"))
                else:
                    note = (f"'{name}' is not a benchmark: class coverage not checked "
                            "(pass --root DATA or --split FILE to check it).")
        path = file or prompt_file(name, directory)
        reads = os.path.splitext(os.path.basename(path))[0]
        if not (file or split) and reads != name and benchmark_classnames(reads):  # a DG target: its source's
            note = f"{name} has no ensemble of its own: it reads {reads}'s, checked here as {reads}"
            name, expected = reads, benchmark_classnames(reads)
        if not os.path.isfile(path):
            have = sorted(f[:-5] for f in os.listdir(directory) if f.endswith(".json")) if os.path.isdir(
                directory) else []
            raise UserError(f"No prompt file {path}." + (f" Files in {directory}: {', '.join(have)}." if have else ""))
        jobs.append((name, path, expected, note))
    return jobs


# ----- printing ------------------------------------------------------------------------------------
def format_report(report: Report, show_warnings: bool = True) -> str:
    lines = [f"{report.dataset or '?'}  ({os.path.relpath(report.path) if report.path else '-'})"
             + (f"  modality: {report.modality}" if report.modality else "")]
    if report.classes:
        width = max(12, *(len(c.classname) for c in report.classes))
        heads = [f"{'class':<{width}}", f"{'n':>4}"]
        heads += [f"{f'{name} max/{limit}':>14}" for name, limit in report.counters]
        heads += [f"{'names class':>11}", "  status"]
        lines.append("  " + "  ".join(heads))
        for c in report.classes:
            cols = [f"{c.classname:<{width}}", f"{c.count:>4}"]
            for name, _ in report.counters:
                cols.append(f"{c.max_tokens.get(name, 0):>14}")
            status = "ok" if not c.errors else f"{c.errors} error(s)"
            if c.warnings:
                status += f", {c.warnings} warning(s)"
            cols += [f"{c.naming:>11.0%}", f"  {status}"]
            lines.append("  " + "  ".join(cols))
    for issue in report.errors:
        lines.append(f"  ERROR   [{issue.kind}] {issue.message}")
    if show_warnings:
        for issue in report.warnings:
            lines.append(f"  warning [{issue.kind}] {issue.message}")
    for note in report.notes:
        lines.append(f"  note: {note}")
    return "\n".join(lines)


# ----- incremental gate (the generator keeps only sentences that pass every rule) --------------------
class SentenceGate:
    """Admits new sentences one at a time under the same rules check_ensemble applies to a whole file."""

    def __init__(self, classes: dict[str, list[str]], classnames: Sequence[str], counters: Sequence[TokenCounter],
                 near: float = NEAR):
        self.counters = list(counters)
        self.near = near
        self.pattern = name_pattern(list(classnames) + list(classes))
        self.prints: dict[str, list[Fingerprint]] = {}
        self.templates: dict[str, set[str]] = {}
        for name, sentences in classes.items():
            for text in sentences:
                self.add(name, text)

    def add(self, classname: str, text: str) -> None:
        self.prints.setdefault(classname, []).append(Fingerprint.of(text))
        self.templates.setdefault(templated(text, self.pattern), set()).add(classname)

    def reason(self, classname: str, text: str) -> str | None:
        """Why `text` may not join `classname`'s sentences (a rule name), or None if it may."""
        if sentence_problem(text):
            return "not-one-sentence"
        for counter in self.counters:
            if counter.count([text])[0] > counter.limit:
                return "too-long"
        fp = Fingerprint.of(text)
        for other in self.prints.get(classname, []):
            if other.key == fp.key:
                return "duplicate"
            if other.similarity(fp) >= self.near:
                return "near-duplicate"
        if self.templates.get(templated(text, self.pattern), set()) - {classname}:
            return "template-swap"
        return None
