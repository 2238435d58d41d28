"""tools/analyze_prompts.py (prompts.analysis): the per-class ensemble measures by hand, and the tool on a twin."""

import json
import math
import os

import torch
from analyze_prompts import main

from prompts.analysis import class_metrics


def test_class_metrics_by_hand():
    bank = torch.tensor([[[1.0, 0.0], [0.0, 1.0]],  # class 0: orthogonal sentences
                         [[1.0, 0.0], [1.0, 0.0]]])  # class 1: the same sentence twice
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    c0, c1, overall = class_metrics(bank, feats, labels, tau=1.5)
    assert (c0["diversity"], c1["diversity"]) == (0.0, 1.0)
    assert (c0["alignment"], c1["alignment"]) == (0.5, 0.0)
    r = 1 / math.sqrt(2)  # class 0's ensemble mean is (r, r), class 1's is (1, 0)
    assert abs(c0["margin"] - (r - 1.0)) < 1e-6 and abs(c1["margin"] - (0.0 - r)) < 1e-6
    assert c0["kept"] == c1["kept"] == overall["kept"] == 1.0  # two prompts are never outliers at tau 1.5
    assert abs(overall["margin"] - (c0["margin"] + c1["margin"]) / 2) < 1e-9


def test_two_ensembles_side_by_side_on_a_twin(synthetic_btmri, tmp_path, capsys):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    original = json.load(open(os.path.join(repo, "clip_prompts", "BTMRI.json")))
    shuffled = {**original, "classes": {k: v[::-1] for k, v in original["classes"].items()}}
    other = tmp_path / "BTMRI.json"
    other.write_text(json.dumps(shuffled))
    out = tmp_path / "analysis.json"
    assert main(["BTMRI", "--root", synthetic_btmri, "--model", "TinyBiomedCLIP", "--shots", "2",
                 "--n-prompts", "10", "--compare", str(other), "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "normal brain" in table and "B = " in table
    result = json.load(open(out))
    first, second = result["ensembles"].values()
    assert len(first) == len(second) == 5 and result["images"] == 8
    assert first[0]["diversity"] != second[0]["diversity"]  # other sentences, other numbers
