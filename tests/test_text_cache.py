"""The prompt-feature cache: a second build reads it; other prompts or other weights encode again."""

import copy
import os

import torch
from test_trainers import make_trainer

from engine.text_cache import encode_prompts_cached


class CountingBackbone:
    """Wraps a backbone and counts how many prompts reach its text tower."""

    def __init__(self, backbone):
        self.inner, self.encoded = backbone, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_prompts(self, prompts):
        self.encoded += len(prompts)
        return self.inner.encode_prompts(prompts)


def cache_dir_of(root, backbone):
    return os.path.join(root, backbone.cache_key())  # the trainer's layout: one folder per weights


def test_second_encoding_reads_the_cache_and_new_prompts_or_weights_encode_again(tiny_biomedclip, tmp_path):
    counting = CountingBackbone(tiny_biomedclip)
    prompts = ["a photo of a glioma tumor.", "a photo of a normal brain."]
    first = encode_prompts_cached(counting, prompts, cache_dir_of(tmp_path, tiny_biomedclip))
    again = encode_prompts_cached(counting, prompts, cache_dir_of(tmp_path, tiny_biomedclip))
    assert counting.encoded == 2 and torch.equal(first, again)
    with torch.no_grad():  # the cached features are the eval-mode (no dropout) encoding
        assert torch.allclose(first, tiny_biomedclip.eval().encode_prompts(prompts), atol=1e-6)

    edited = ["a photo of a glioma tumour.", "a photo of a normal brain."]
    encode_prompts_cached(counting, edited, cache_dir_of(tmp_path, tiny_biomedclip))
    assert counting.encoded == 4  # an edited prompt list is encoded anew

    changed = copy.deepcopy(tiny_biomedclip)
    with torch.no_grad():
        next(p for n, p in changed.named_parameters() if "word_embeddings" in n).view(-1)[0] += 1.0
    assert changed.cache_key() != tiny_biomedclip.cache_key()
    other = CountingBackbone(changed)
    encode_prompts_cached(other, prompts, cache_dir_of(tmp_path, changed))
    assert other.encoded == 2  # other weights: another folder, encoded again


def test_a_second_biomedcoop_build_does_not_encode_the_prompt_bank(synthetic_btmri, tmp_path, monkeypatch):
    config = "configs/trainers/BiomedCoOp/few_shot/btmri.yaml"
    cache = ["FEATURES.CACHE_DIR", str(tmp_path / "features")]
    first = make_trainer(synthetic_btmri, "BiomedCoOp_TinyBiomedCLIP", config, tmp_path / "a", *cache)
    calls = []
    original = type(first.backbone).encode_prompts
    monkeypatch.setattr(type(first.backbone), "encode_prompts", lambda self, p, **k: calls.append(len(p))
                        or original(self, p, **k))
    second = make_trainer(synthetic_btmri, "BiomedCoOp_TinyBiomedCLIP", config, tmp_path / "b", *cache)
    assert calls == [] and torch.equal(first.prompt_bank, second.prompt_bank)
    make_trainer(synthetic_btmri, "BiomedCoOp_TinyBiomedCLIP", config, tmp_path / "c", *cache,
                 "TRAINER.BIOMEDCOOP.N_PROMPTS", "10")
    assert calls == [40]  # another prompt list (10 per class): encoded once


def test_another_tokenizer_behind_the_same_weights_encodes_again(tiny_biomedclip, tmp_path):
    prompts = ["a photo of a glioma tumor."]
    counting = CountingBackbone(tiny_biomedclip)
    encode_prompts_cached(counting, prompts, cache_dir_of(tmp_path, tiny_biomedclip))
    ids = tiny_biomedclip.tokenize(prompts)
    counting.tokenize = lambda texts: torch.where(ids > 100, ids + 1, ids)  # a different vocabulary
    encode_prompts_cached(counting, prompts, cache_dir_of(tmp_path, tiny_biomedclip))
    assert counting.encoded == 2  # same weights folder, other token ids: not the stale features


def test_encoding_keeps_each_modules_own_mode(tiny_biomedclip, tmp_path):
    backbone = copy.deepcopy(tiny_biomedclip)
    backbone.train()
    backbone.text_tower.eval()  # a trainer's state: wrapper in train mode, frozen tower in eval
    encode_prompts_cached(backbone, ["a photo of a glioma tumor."], None)
    assert backbone.training and not backbone.text_tower.training
    assert not any(m.training for m in backbone.text_tower.modules())


def test_an_unwritable_cache_folder_still_encodes(tiny_biomedclip, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    feats = encode_prompts_cached(tiny_biomedclip, ["a photo of a glioma tumor."], str(blocker / "sub"))
    assert feats.shape == (1, tiny_biomedclip.embed_dim)


def test_an_edited_prompt_file_rebuilds_the_bank(synthetic_btmri, tmp_path, monkeypatch):
    import json
    import shutil

    import engine.prompts

    config = "configs/trainers/BiomedCoOp/few_shot/btmri.yaml"
    cache = ["FEATURES.CACHE_DIR", str(tmp_path / "features"), "TRAINER.BIOMEDCOOP.N_PROMPTS", "2"]
    prompts = tmp_path / "prompts"
    shutil.copytree(engine.prompts.PROMPTS_DIR, prompts)
    monkeypatch.setattr(engine.prompts, "PROMPTS_DIR", str(prompts))
    first = make_trainer(synthetic_btmri, "BiomedCoOp_TinyBiomedCLIP", config, tmp_path / "a", *cache)
    data = json.loads((prompts / "BTMRI.json").read_text(encoding="utf-8"))
    sentences = data["classes"]["glioma tumor"]
    sentences[0] = "An edited sentence about a glioma tumor."
    (prompts / "BTMRI.json").write_text(json.dumps(data), encoding="utf-8")
    calls = []
    original = type(first.backbone).encode_prompts
    monkeypatch.setattr(type(first.backbone), "encode_prompts", lambda self, p, **k: calls.append(len(p))
                        or original(self, p, **k))
    second = make_trainer(synthetic_btmri, "BiomedCoOp_TinyBiomedCLIP", config, tmp_path / "b", *cache)
    assert calls == [8]  # the edited file's bank (2 prompts x 4 classes) is encoded again
    row = second.classnames.index(next(c for c in second.classnames if c.replace("_", " ") == "glioma tumor"))
    assert not torch.equal(first.prompt_bank[row, 0], second.prompt_bank[row, 0])
    assert torch.allclose(first.prompt_bank[row, 1], second.prompt_bank[row, 1], atol=1e-5)  # the others kept
