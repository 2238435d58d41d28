"""The one loader of LLM prompt ensembles (clip_prompts/<DATASET>.json).

File schema (documented in clip_prompts/README.md):
    {"dataset": "<DATASET.NAME>", "modality": "<free text>",
     "classes": {"<exact classname>": ["sentence", ...], ...}}
"""

from __future__ import annotations

import json
import os

from engine.errors import UserError

PROMPTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "clip_prompts")


def prompt_file(dataset: str, directory: str | None = None) -> str:
    """<directory or clip_prompts>/<dataset>.json; a dataset without its own file whose reader names a
    `prompt_dataset` (a domain-generalisation target: its source's classes at another site) reads that one's."""
    own = os.path.join(directory or PROMPTS_DIR, f"{dataset}.json")
    if os.path.isfile(own):
        return own
    from engine.registry import DATASET_REGISTRY

    source = getattr(DATASET_REGISTRY.get(dataset), "prompt_dataset", "") if dataset in DATASET_REGISTRY else ""
    return os.path.join(directory or PROMPTS_DIR, f"{source}.json") if source else own


def schema_problem(data) -> str | None:
    """What is wrong with a parsed prompt file's structure, or None if it has the documented schema."""
    if not isinstance(data, dict):
        return f"the top level is a {type(data).__name__}, not an object"
    for key in ("dataset", "modality"):
        if key in data and not isinstance(data[key], str):
            return f"'{key}' must be a string, not {type(data[key]).__name__}"
    classes = data.get("classes")
    if not isinstance(classes, dict):
        return "no 'classes' object" if classes is None else "'classes' must be an object {classname: [sentences]}"
    if not classes:
        return "'classes' is empty"
    for name, sentences in classes.items():
        if not isinstance(sentences, list):
            return f"class '{name}' maps to a {type(sentences).__name__}, not a list of sentences"
        bad = next((i for i, s in enumerate(sentences) if not isinstance(s, str)), None)
        if bad is not None:
            return f"class '{name}', entry {bad} is a {type(sentences[bad]).__name__}, not a string"
    return None


def read_prompt_file(path: str) -> dict:
    """Read and validate the schema; class lists are returned as given."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError as err:
        name = os.path.splitext(os.path.basename(path))[0]
        raise UserError(
            f"No prompt ensemble at {path}. Write one (see clip_prompts/README.md) or generate it with "
            f"`python tools/generate_prompts.py --from-dataset {name} --root DATA --modality \"...\"`; "
            "the other methods need no ensemble."
        ) from err
    except OSError as err:
        raise UserError(f"Cannot read the prompt file {path}: {err}") from err
    except ValueError as err:
        raise UserError(f"{path} is not valid JSON: {err}") from err
    problem = schema_problem(data)
    if problem:
        raise UserError(
            f"{path}: {problem}. Expected {{'dataset': str, 'modality': str, 'classes': {{classname: [sentences]}}}} "
            "(see clip_prompts/README.md)."
        )
    return data


def load_ensemble(
    dataset: str, classnames: list[str], n_prompts: int, directory: str | None = None,
    n_prompts_key: str = "TRAINER.BIOMEDCOOP.N_PROMPTS", path: str | None = None,
) -> list[list[str]]:
    """The first `n_prompts` sentences of each class, in class order; names every shortfall.

    The file is `<directory or clip_prompts>/<dataset>.json`, or `path` when given.
    """
    path = path or prompt_file(dataset, directory)
    classes = read_prompt_file(path)["classes"]
    lookup = {k.lower(): v for k, v in classes.items()}
    missing = [c for c in classnames if c.replace("_", " ").lower() not in lookup]
    if missing:
        raise UserError(
            f"{path} has no prompts for class(es) {missing}. Its classes are {list(classes)}; "
            "add the missing ones (class strings must match the dataset's exactly)."
        )
    out = []
    for c in classnames:
        sentences = lookup[c.replace("_", " ").lower()]
        if len(sentences) < n_prompts:
            raise UserError(
                f"{path}: class '{c}' has {len(sentences)} prompts but N_PROMPTS is {n_prompts}. "
                f"Add {n_prompts - len(sentences)} more or set {n_prompts_key} {len(sentences)}."
            )
        out.append(sentences[:n_prompts])
    return out
