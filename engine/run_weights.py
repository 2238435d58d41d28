"""Which weights a finished run stands for: the folder of its checkpoints and the epoch it tested.

A trained run holds its own `<model>/model.pth.tar-<E>` files. An eval-only run holds none: the folder it
loaded is in its recorded settings ("run.model_dir", "run.load_epoch") or, for runs recorded before
those keys existed, in the "Loading weights to ... from ..." line that TrainerX.load_model logs.
Light on purpose (os, re): readers of results import it without torch.
"""

from __future__ import annotations

import os
import re

# The line TrainerX.load_model writes to log.txt for every model it loads.
LOADED_LINE = re.compile(r"^Loading weights to (\S+) from (.+?) \(epoch = .*\)$")


def evaluated_model(run_dir: str, record: dict) -> tuple[str, int | None]:
    """(folder holding <model>/model.pth.tar-<E>, epoch or None for the newest) of a run's weights."""
    if not record.get("eval_only"):
        return run_dir, None
    config = record.get("config") or {}
    if config.get("run.model_dir"):
        return config["run.model_dir"], config.get("run.load_epoch")
    log = os.path.join(run_dir, "log.txt")
    if os.path.isfile(log):
        with open(log, encoding="utf-8") as f:
            for line in f:
                match = LOADED_LINE.match(line.strip())
                if match:
                    path = match.group(2)
                    epoch = path.rsplit("-", 1)[-1]
                    return os.path.dirname(os.path.dirname(path)), int(epoch) if epoch.isdigit() else None
    return run_dir, None


def checkpoint_epochs(folder: str) -> list[int]:
    """Epochs of the model.pth.tar-<E> files in one model's folder, ascending ([] when there is none)."""
    if not os.path.isdir(folder):
        return []
    return sorted(int(f.rsplit("-", 1)[1]) for f in os.listdir(folder) if re.fullmatch(r"model\.pth\.tar-\d+", f))
