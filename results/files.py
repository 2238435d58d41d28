"""Writing what the result tools produce: whole files only (a reader never sees half a table)."""

from __future__ import annotations

import os
import sys
import tempfile


def write_text_atomic(path: str, text: str) -> None:
    """Write beside `path`, then rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def emit_table(build, out: str | None) -> int:
    """A table tool's ending: print or write (atomically) what `build()` returns; exit status 2 when
    the results folder has nothing to tabulate, with the one-line reason."""
    try:
        text = build()
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if out:
        write_text_atomic(out, text)
        print(f"wrote {os.path.abspath(out)}")
    else:
        sys.stdout.write(text)
    return 0
