"""Run a method script's own train.py commands in this process (shared by the method tests)."""

import os
import shlex
import subprocess
import sys

import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script_in_process(script: str, args: list, cwd, monkeypatch, extra_opts: str) -> None:
    """`script` (e.g. scripts/evisteer/few_shot.sh) lists its train.py commands under PRINT_RUNS=1; each
    runs here: the same runs as `bash script ...` without a Python start-up per run."""
    env = {**os.environ, "PYTHON": sys.executable, "SEEDS": "1", "PRINT_RUNS": "1", "EXTRA_OPTS": extra_opts}
    proc = subprocess.run(["bash", os.path.join(REPO, script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    commands = [shlex.split(line) for line in proc.stdout.splitlines() if line.strip()]
    assert commands and all(c[1] == os.path.join(REPO, "train.py") for c in commands)
    monkeypatch.chdir(cwd)
    for command in commands:
        assert train.main(command[2:]) == 0, command
