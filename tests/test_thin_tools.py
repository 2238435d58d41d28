"""tools/ as thin entry points over the domain packages: quick --help, no tool importing another, the
logic importable from its package, and the run-weights lookup the prompt and prediction tools share."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

from engine.run_weights import checkpoint_epochs, evaluated_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(REPO, "tools")

# The tools whose logic moved into prompts/, datasets/, backbones/ and engine/.
THIN = ["analyze_prompts", "check_prompts", "generate_prompts", "inspect_prompts", "interpret_prompt",
        "download_data", "check_data", "prepare_dataset", "download_weights", "download_checkpoints", "predict"]


def _help_modules(tool: str) -> set[str]:
    """Modules loaded while `python tools/<tool>.py --help` runs (reported by the child itself)."""
    code = (
        "import runpy, sys\n"
        f"sys.argv = [{os.path.join(TOOLS, tool + '.py')!r}, '--help']\n"
        f"sys.path.insert(0, {TOOLS!r})\n"
        "try:\n"
        f"    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "sys.stderr.write('MODULES ' + ' '.join(sorted(sys.modules)))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert "usage:" in done.stdout, done.stdout + done.stderr
    return set(done.stderr.rsplit("MODULES ", 1)[1].split())


@pytest.mark.parametrize("tool", ["analyze_prompts", "inspect_prompts", "download_weights", "download_checkpoints"])
def test_help_imports_no_torch(tool):
    loaded = _help_modules(tool)
    heavy = sorted(m for m in loaded if m.split(".")[0] in ("torch", "open_clip", "transformers", "timm"))
    assert not heavy, f"{tool}.py --help imports {heavy[:5]}"


def _imports(path: str) -> set[str]:
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


ALL_TOOLS = sorted(name[:-3] for name in os.listdir(TOOLS) if name.endswith(".py") and name != "_bootstrap.py")


@pytest.mark.parametrize("tool", ALL_TOOLS)
def test_no_tool_imports_another(tool):
    imported = _imports(os.path.join(TOOLS, tool + ".py")) & set(ALL_TOOLS)
    assert not imported, f"{tool}.py imports the tool(s) {sorted(imported)}; import the package they use instead"


@pytest.mark.parametrize("tool", THIN)
def test_moved_tools_are_thin(tool):
    with open(os.path.join(TOOLS, tool + ".py"), encoding="utf-8") as f:
        lines = f.read().count("\n")
    assert lines <= 150, f"{tool}.py has {lines} lines; its logic belongs in a package"


def test_evaluated_model_of_trained_new_and_older_eval_only_runs(tmp_path):
    trained = tmp_path / "base" / "seed1"
    (trained / "prompt_learner").mkdir(parents=True)
    for epoch in (10, 2, 5):
        (trained / "prompt_learner" / f"model.pth.tar-{epoch}").write_bytes(b"")
    (trained / "prompt_learner" / "model.pth.tar-5.tmp").write_bytes(b"")  # a half-written file is no epoch
    assert checkpoint_epochs(str(trained / "prompt_learner")) == [2, 5, 10]
    assert checkpoint_epochs(str(tmp_path / "nowhere")) == []
    assert evaluated_model(str(trained), {"eval_only": False}) == (str(trained), None)

    recorded = {"eval_only": True, "config": {"run.model_dir": str(trained), "run.load_epoch": 5}}
    assert evaluated_model(str(tmp_path / "new"), recorded) == (str(trained), 5)

    older = tmp_path / "older"
    older.mkdir()
    (older / "log.txt").write_text(
        "** Config **\nSEED: 1\n"
        f"Loading weights to prompt_learner from {trained / 'prompt_learner' / 'model.pth.tar-10'} (epoch = 10)\n"
    )
    assert evaluated_model(str(older), {"eval_only": True}) == (str(trained), 10)
    assert evaluated_model(str(tmp_path / "bare"), {"eval_only": True}) == (str(tmp_path / "bare"), None)



def test_help_examples_keep_their_line_continuations():
    """A docstring shown by --help whose example ends a line with a backslash must be raw: in a plain
    string the backslash and newline vanish and the two lines run together."""
    for name in sorted(n for n in os.listdir(TOOLS) if n.endswith(".py")):
        source = open(os.path.join(TOOLS, name), encoding="utf-8").read()
        before, _, rest = source.partition('"""')
        doc_source = rest.partition('"""')[0]
        if any((len(line) - len(line.rstrip("\\"))) % 2 for line in doc_source.splitlines()):  # odd: joins
            assert before.endswith("r"), f"tools/{name}: make its docstring raw (r\"\"\")"
