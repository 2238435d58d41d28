"""Run a method script's own train.py commands in this process (shared by the method tests)."""

import os
import shlex
import subprocess
import sys

import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script_in_process(script: str, args: list, cwd, monkeypatch, extra_opts: str, **env: str | None) -> None:
    """`script` (e.g. scripts/evisteer/few_shot.sh) lists its train.py commands under PRINT_RUNS=1; each
    runs here, in order: the same runs as `bash script ...` without a Python start-up (torch, open_clip:
    seconds) per run. `env` sets the script's other variables (SEEDS, default 1, None for the script's
    own default; TARGETS; OUTPUT_ROOT). What the runs print ("Skip this job") reaches the test's capsys."""
    env = {**os.environ, "PYTHON": sys.executable, "SEEDS": "1", **env, "PRINT_RUNS": "1", "EXTRA_OPTS": extra_opts}
    env = {k: v for k, v in env.items() if v is not None}
    proc = subprocess.run(["bash", os.path.join(REPO, script), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    commands = [shlex.split(line) for line in proc.stdout.splitlines() if line.strip()]
    assert commands and all(c[1] == os.path.join(REPO, "train.py") for c in commands)
    monkeypatch.chdir(cwd)
    for command in commands:
        assert train.main(command[2:]) == 0, command
