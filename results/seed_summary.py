"""Each seed's metric in one run folder, then mean and spread over seeds (the reference's
parse_test_res). Seeds made with different settings are not averaged together."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

from engine.runs import RunIdentity, number_settings, read_record, setting_differences
from results.aggregate import mean, pstd

METRIC_LINE = re.compile(r"^\* (\w+): ([\d.]+)%")


class SummaryError(Exception):
    """Nothing to summarise, or seeds that cannot be averaged: the message is one line."""


class BrokenRecord(SummaryError):
    """A results.json that is not valid JSON (`unreadable`) or not a results record."""

    def __init__(self, path: str, why: str, unreadable: bool):
        super().__init__(f"{path} {why}")
        self.path, self.why, self.unreadable = path, why, unreadable


@dataclass
class SeedValue:
    folder: str
    value: float
    record: dict | None  # None when the value came from log.txt


def read_metric(folder: str, keyword: str = "accuracy") -> SeedValue | None:
    """The seed's `keyword` from results.json, else the last "* keyword: X%" after "=> result" in its
    log.txt (reference-style logs); None when neither has it."""
    path = os.path.join(folder, "results.json")
    record, why = read_record(folder)
    if why.startswith("cannot be read"):  # keep the parser's own words
        raise BrokenRecord(path, why.removeprefix("cannot be read (").removesuffix(")"), unreadable=True)
    if why:
        raise BrokenRecord(path, why, unreadable=False)
    if record is not None:
        value = record.get(keyword)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise BrokenRecord(path, f"holds {keyword} {value!r}, not a number", unreadable=False)
        return SeedValue(folder, float(value), record)
    log = os.path.join(folder, "log.txt")
    if not os.path.isfile(log):
        return None
    value, seen_result = None, False
    with open(log, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line == "=> result":
                seen_result = True
            match = METRIC_LINE.match(line)
            if seen_result and match and match.group(1) == keyword:
                value = float(match.group(2))
    return None if value is None else SeedValue(folder, value, None)


def _check_one_configuration(rows: list[SeedValue], directory: str) -> None:
    """Stop when the seeds' records name different runs (another method, model, dataset, K or settings)."""
    recorded = [r for r in rows if r.record is not None]
    for row in recorded[1:]:
        first = recorded[0]
        a, b = RunIdentity.from_record(first.record), RunIdentity.from_record(row.record)
        keys = setting_differences(number_settings(first.record.get("config") or {}),
                                   number_settings(row.record.get("config") or {}))
        if a.cell != b.cell or keys:
            what = ", ".join(keys) if keys else "method, model, dataset, K or task"
            raise SummaryError(f"{first.folder} and {row.folder} are not seeds of one run (they differ in {what}); "
                               f"python tools/make_tables.py {directory} shows them as separate rows")


def summarize(directory: str, keyword: str = "accuracy", ci95: bool = False) -> tuple[list[SeedValue], float, float]:
    """(one value per seed folder, mean, population std or its 95% half-width 1.96 std / sqrt(n))."""
    if not os.path.isdir(directory):
        raise SummaryError(f"{directory} is not a folder")
    rows = []
    for name in sorted(os.listdir(directory)):
        sub = os.path.join(directory, name)
        if name.startswith(".") or not os.path.isdir(sub):
            continue
        value = read_metric(sub, keyword)
        if value is not None:
            rows.append(value)
    if not rows:
        raise SummaryError(f"no results.json or finished log.txt under {directory}")
    _check_one_configuration(rows, directory)
    values = [r.value for r in rows]
    spread = pstd(values)
    if ci95:
        spread = 1.96 * spread / math.sqrt(len(values))
    return rows, mean(values), spread
