"""What a run is, and whether it is done: the one definition that train.py, the scripts (through
train.py --skip-finished), the sweep and every results table share.

A run folder (`.../seed<S>/`) is finished when its results.json records the settings asked for. The
record's "config" holds the effective flat config (engine.config.flat_config plus train.py's
run options); `settings_digest` hashes the part of it that changes numbers, and `RunIdentity` names
what a run measures: protocol, method, run label, model, dataset, task, K, few-shot protocol and
that digest. Two runs with equal identities differ only by seed.

Light on purpose (json, hashlib, os): tools that only read results import it without torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass, field

from engine.config import NON_RESULT_KEYS

RESULTS_FILE = "results.json"
LOG_FILE = "log.txt"
RESUME_FILE = "resume.pth"  # written after every epoch but the last (engine.trainer), removed when the run ends
# Beside it, its epoch and settings in JSON: what tells an interrupted run from a stale one without torch.
RESUME_NOTE = "resume.json"
# The line train.py writes last into log.txt when a run stops on an error (after its traceback).
CRASH_LINE = "The run stopped on an error"

# Keys that say where things live, how much is printed or how many workers load data: two runs that
# differ only here compute the same numbers, so neither the digest nor the finished/stale check looks
# at them. NON_RESULT_KEYS are already left out of new records; older records may still hold them.
# DATASET.ROOT is where the data lives (the dataset is DATASET.NAME), and moving it changes nothing.
IGNORED_KEYS = frozenset(NON_RESULT_KEYS | {"DATASET.ROOT"})

# Keys that differ between the seeds of one table cell by design: the seed itself, and the folder an
# eval-only run loaded (each seed loads its own). They stay out of the digest; the finished/stale
# check of one run folder still compares them (another seed or other weights are another run).
PER_SEED_KEYS = frozenset({"SEED", "run.model_dir"})

PROTOCOLS = ("few_shot", "base2new", "transfer", "dg")


def number_settings(config: dict) -> dict:
    """The part of a flat config that changes a run's numbers, seed aside."""
    return {k: v for k, v in config.items() if k not in IGNORED_KEYS and k not in PER_SEED_KEYS}


def settings_digest(config: dict) -> str:
    """12 hex digits naming every setting that changes numbers (`number_settings`), stable across
    processes and key order. An empty or missing config (records older than the "config" field)
    digests to "unknown"."""
    settings = number_settings(config or {})
    if not settings:
        return "unknown"
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def setting_differences(old: dict, new: dict) -> list[str]:
    """Keys both configs have with different values (`IGNORED_KEYS` aside), sorted.

    A key only one side has came with a code change (a newly added default) and played no part in
    the older run, so it does not count (engine.config.config_differences says the same)."""
    return sorted(k for k in set(old) & set(new) if k not in IGNORED_KEYS and old[k] != new[k])


def split_method(trainer: str) -> str:
    """'CoOp_OpenCLIP-org--my_model' -> 'CoOp'. Method names hold no '_' (they are class names), while
    a generic family's model label may, so the method is what comes before the first one."""
    return trainer.partition("_")[0]


def model_label(config: dict) -> str:
    """The model as results name it (engine.trainer.backbone_label), from a flat config."""
    name = str(config.get("MODEL.BACKBONE.NAME") or "?")
    which = str(config.get("run.model") or "")
    name = f"{name}-{which}" if which else name
    return name if config.get("MODEL.BACKBONE.PRETRAINED", True) else f"{name}-random"


@dataclass(frozen=True)
class RunIdentity:
    """What a run measures; runs with equal identities are seeds of one another.

    protocol: few_shot, base2new, transfer (an eval-only run of weights trained on another dataset)
    or dg (domain generalisation). dataset: the data the run was tested on (for transfer and dg, the
    target). task: "all" for few-shot, "base" / "new" for base-to-novel, and for transfer and dg the
    source dataset the weights were trained on. A record may state its own "protocol", "source" and
    "task" (protocols that the layout cannot infer, such as dg); otherwise they are inferred here.
    """

    protocol: str
    method: str
    label: str
    model: str
    dataset: str
    task: str
    shots: int
    fewshot_protocol: str
    digest: str

    @property
    def cell(self) -> tuple:
        """Everything but the digest: the table cell the run's numbers belong in (before settings are
        told apart)."""
        return (self.protocol, self.method, self.label, self.model, self.dataset, self.task, self.shots,
                self.fewshot_protocol)

    @property
    def variant(self) -> str:
        """The row's variant tag: the few-shot protocol unless balanced, then the run label, '_'-joined."""
        parts = (self.fewshot_protocol if self.fewshot_protocol != "balanced" else "", self.label)
        return "_".join(p for p in parts if p)

    @classmethod
    def from_config(cls, config: dict, label: str = "", source: str | None = None) -> RunIdentity:
        """The identity of the run a flat config (plus train.py's run options) asks for; `label` is its
        TRAINER.RUN_LABEL (not a number-changing key, so not in the flat config)."""
        record = {
            "method": split_method(str(config.get("TRAINER.NAME") or "?")),
            "backbone": model_label(config),
            "dataset": config.get("DATASET.NAME"),
            "num_shots": config.get("DATASET.NUM_SHOTS"),
            "subsample_classes": config.get("DATASET.SUBSAMPLE_CLASSES"),
            "fewshot_protocol": config.get("DATASET.FEWSHOT_PROTOCOL"),
            "eval_only": bool(config.get("run.eval_only")),
            "label": label,
            "config": config,
        }
        return cls.from_record(record, source=source)

    @classmethod
    def from_record(cls, record: dict, source: str | None = None, hint: dict | None = None) -> RunIdentity:
        """The identity of a results.json record. `source`: for an eval-only run, the dataset its
        weights were trained on (read from the loaded folder's record by the caller), which makes a
        run on another dataset a transfer run. `hint`: what the folder layout says (results.folder_hint),
        used for fields an older record lacks."""
        hint = hint or {}
        source = source or (str(record["source"]) if record.get("source") else None)
        config = record.get("config") if isinstance(record.get("config"), dict) else {}
        dataset = str(record.get("dataset") or hint.get("dataset") or "?")
        shots = record.get("num_shots", hint.get("shots", -1))
        model = str(record.get("backbone") or hint.get("model") or "?")
        if record.get("pretrained") is False and not model.endswith("-random"):
            model += "-random"  # random-weight runs never share a row with real-weight ones
        subsample = str(record.get("subsample_classes") or hint.get("task") or "all").lower()
        protocol, task = "few_shot", "all"
        if subsample in ("base", "new"):
            protocol, task = "base2new", subsample
        elif record.get("eval_only") and source and source != dataset:
            protocol, task = "transfer", source
        if record.get("protocol") in ("dg", "transfer") and source:
            task = source  # a protocol the record states (dg): its runs are told apart by their source
        protocol = str(record.get("protocol") or protocol)
        task = str(record.get("task") or task)
        label = record.get("label") if "label" in record else hint.get("label", "")
        fewshot = record.get("fewshot_protocol") if "fewshot_protocol" in record else hint.get("fewshot_protocol")
        return cls(
            protocol=protocol,
            method=str(record.get("method") or hint.get("method") or "?"),
            label=str(label or ""),
            model=model,
            dataset=dataset,
            task=task,
            shots=int(shots) if isinstance(shots, int) and not isinstance(shots, bool) else -1,
            fewshot_protocol=str(fewshot or "balanced"),
            digest=settings_digest(config),
        )


# ----- done or not -----------------------------------------------------------------------------------

FINISHED, STALE, FAILED, RUNNING, PENDING = "finished", "stale", "failed", "running", "pending"
INTERRUPTED = "interrupted"


@dataclass
class RunStatus:
    """Where one run folder stands. `state` is one of:

    finished  results.json records the requested settings (or none were given to compare)
    stale     results.json was made with other settings: `differences` names them ("KEY: OLD -> NEW"),
              or `reason` says the record cannot be matched (no recorded settings, not an object);
              also a resume state saved with other settings (`resume` set): resuming it would refuse
    interrupted  stopped mid-run (killed, preempted, cancelled) with its resume state: the same command
              resumes it; `resume` holds the state's epoch, epoch budget and settings
    failed    a log but no usable results.json and nothing to resume, or a log that ends on an error:
              `reason`, and `log_tail`
    running   another live process holds the folder's lock (engine.run_lock): `holder`
    pending   nothing there yet
    """

    state: str
    run_dir: str
    reason: str = ""
    differences: list[str] = field(default_factory=list)
    log_tail: list[str] = field(default_factory=list)
    holder: dict | None = None
    record: dict | None = None
    unreadable: bool = False  # results.json exists but is not valid JSON
    resume: dict | None = None  # interrupted, or stale resume state: resume_state()


def _lock_holder(run_dir: str) -> dict | None:
    try:
        from engine.run_lock import lock_holder
    except ImportError:  # a tree without run locks: no run counts as running
        return None
    holder = lock_holder(run_dir)
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        return None  # this very process holds it (train.py checks again once it has the lock)
    return holder


def latest_log(run_dir: str) -> str:
    """The log of the run's latest attempt: a rerun (a resume) writes log.txt-<date-time> beside the
    first attempt's log.txt (engine.utils.open_log_file), and those names sort by time."""
    try:
        later = sorted(n for n in os.listdir(run_dir) if n.startswith(LOG_FILE + "-"))
    except OSError:
        later = []
    return os.path.join(run_dir, later[-1] if later else LOG_FILE)


def log_tail(run_dir: str, lines: int = 15) -> list[str]:
    """The last `lines` non-empty lines of the run's latest log ([] when there is none)."""
    try:
        with open(latest_log(run_dir), encoding="utf-8", errors="replace") as f:
            text = f.read().splitlines()
    except OSError:
        return []
    return [line for line in text if line.strip()][-lines:]


def resume_state(run_dir: str) -> dict | None:
    """None when the folder holds no resume state; else {"epoch": epochs done, "max_epoch": the run's
    budget, "config": the settings it was saved with}, each None where unknown (a resume.pth saved
    before resume.json was written beside it, or a note that cannot be read)."""
    if not os.path.isfile(os.path.join(run_dir, RESUME_FILE)):
        return None
    note: dict = {}
    try:
        with open(os.path.join(run_dir, RESUME_NOTE), encoding="utf-8") as f:
            loaded = json.load(f)
        note = loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError):
        pass
    config = note.get("config")
    return {"epoch": note.get("epoch"), "max_epoch": note.get("max_epoch"),
            "config": config if isinstance(config, dict) else None}


def drop_resume_state(run_dir: str) -> None:
    """Remove the resume state (and its note): the next run there starts afresh."""
    for name in (RESUME_FILE, RESUME_NOTE):
        path = os.path.join(run_dir, name)
        if os.path.exists(path):
            os.remove(path)


def stopped_at(resume: dict) -> str:
    """'stopped after epoch 1 of 3', or without a note 'stopped mid-run'."""
    if resume.get("epoch") is None:
        return "stopped mid-run"
    return f"stopped after epoch {resume['epoch']} of {resume.get('max_epoch') or '?'}"


def ended_on_error(tail: list[str]) -> bool:
    """Whether the log ends on a crash: train.py's CRASH_LINE, or a traceback among the last lines."""
    return any(line.startswith(CRASH_LINE) or line.startswith("Traceback (most recent call last)") for line in tail)


def read_record(run_dir: str) -> tuple[dict | None, str]:
    """(record, "") for a results.json holding an object; (None, why) otherwise, why "" when absent."""
    path = os.path.join(run_dir, RESULTS_FILE)
    if not os.path.isfile(path):
        return None, ""
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError) as err:
        return None, f"cannot be read ({err})"
    if not isinstance(record, dict):
        return None, f"holds a JSON {type(record).__name__}, not a results record"
    return record, ""


def difference_lines(old: dict, new: dict, keys: list[str], limit: int | None = None) -> list[str]:
    """'KEY: OLD -> NEW' for each of `keys` (setting_differences), the first `limit` and a count of the rest."""
    lines = [f"{k}: {old[k]!r} -> {new[k]!r}" for k in keys[:limit]]
    return lines + ([f"... and {len(keys) - limit} more"] if limit is not None and len(keys) > limit else [])


def run_status(run_dir: str, requested: dict | None = None) -> RunStatus:
    """Where `run_dir` stands; `requested` is the flat config (engine.config.flat_config plus train.py's
    run options) the caller is about to run, or None to ask only whether a run finished there.

    A live lock wins (a rerun writing over an older result is running, not finished). Finished and
    stale compare `requested` with the recorded "config" through `setting_differences`: only keys both
    have, location keys (IGNORED_KEYS) aside. Stable signature: train.py and the sweep rely on it.
    Without a results.json, a resume state makes the run interrupted (resumable), unless its log ends on
    an error (crashed: failed) or it was saved with other settings than `requested` (stale).
    """
    holder = _lock_holder(run_dir)
    if holder is not None:
        return RunStatus(RUNNING, run_dir, reason="another process is writing to it", holder=holder)
    record, why = read_record(run_dir)
    if record is None and why:
        path = os.path.join(run_dir, RESULTS_FILE)
        unreadable = why.startswith("cannot be read")
        return RunStatus(STALE if not unreadable else FAILED, run_dir, reason=f"{path} {why}",
                         log_tail=log_tail(run_dir), unreadable=unreadable)
    if record is not None:
        if requested is None:
            return RunStatus(FINISHED, run_dir, record=record)
        finished = record.get("config")
        if not isinstance(finished, dict):
            return RunStatus(STALE, run_dir, reason="it does not record the settings it was made with", record=record)
        keys = setting_differences(finished, requested)
        if not keys:
            return RunStatus(FINISHED, run_dir, record=record)
        return RunStatus(STALE, run_dir, reason="made with other settings", record=record,
                         differences=difference_lines(finished, requested, keys))
    tail = log_tail(run_dir)
    resume = resume_state(run_dir)
    if resume is not None and not ended_on_error(tail):
        saved = resume["config"]
        keys = setting_differences(saved, requested) if saved is not None and requested is not None else []
        if keys:
            return RunStatus(STALE, run_dir, reason=f"its resume state ({stopped_at(resume)}) was saved with "
                             "other settings", resume=resume, log_tail=tail,
                             differences=difference_lines(saved, requested, keys))
        return RunStatus(INTERRUPTED, run_dir, reason=f"{stopped_at(resume)}; rerunning resumes it",
                         resume=resume, log_tail=tail)
    if resume is not None:
        return RunStatus(FAILED, run_dir, reason=f"crashed: its log ends on an error ({stopped_at(resume)})",
                         resume=resume, log_tail=tail)
    if tail or os.path.isfile(os.path.join(run_dir, LOG_FILE)):
        return RunStatus(FAILED, run_dir, reason="log.txt but no results.json (crashed or killed)", log_tail=tail)
    return RunStatus(PENDING, run_dir)
