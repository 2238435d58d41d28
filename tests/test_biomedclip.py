"""BiomedCLIP's code path: spliced text encoding, trimming, the tiny twin, the offline error."""


import pytest
import torch

from engine.config import get_cfg_default
from engine.errors import UserError
from engine.registry import BACKBONE_REGISTRY
from trainers.prompt_learner import PromptLearner

PROMPTS = ["a photo of a glioma tumor.", "a photo of a normal OCT scan.", "a photo of a lung squamous cell carcinoma."]


def test_spliced_trimmed_encoding_equals_plain_encoding(tiny_biomedclip):
    ids = tiny_biomedclip.tokenize(PROMPTS)
    assert ids.shape[1] == 256  # padded to BiomedCLIP's context length
    trimmed = tiny_biomedclip.trim(ids)
    assert trimmed.shape[1] == int(tiny_biomedclip.real_lengths(ids).max()) < 256
    with torch.no_grad():
        plain = tiny_biomedclip.encode_text(ids)
        spliced = tiny_biomedclip.encode_text_embeddings(tiny_biomedclip.embed_tokens(trimmed), trimmed)
    assert (plain - spliced).abs().max() < 1e-5


def test_prompt_learner_initialised_from_a_photo_of_a_reproduces_the_plain_prompts(tiny_biomedclip):
    classes = ["glioma tumor", "normal OCT scan", "lung squamous cell carcinoma"]
    learner = PromptLearner(tiny_biomedclip, classes, n_ctx=4, ctx_init="a photo of a")
    assert learner.n_ctx == 4 and learner.ctx.shape == (4, tiny_biomedclip.token_width)
    with torch.no_grad():
        learned = learner.text_features()
        plain = tiny_biomedclip.encode_text(tiny_biomedclip.tokenize(PROMPTS))
    assert (learned - plain).abs().max() < 1e-5


def test_only_the_context_receives_gradients(tiny_biomedclip):
    tiny_biomedclip.requires_grad_(False)
    learner = PromptLearner(tiny_biomedclip, ["glioma tumor", "normal brain"], ctx_init="a photo of a")
    learner.text_features().sum().backward()
    assert learner.ctx.grad is not None and learner.ctx.grad.abs().sum() > 0
    assert list(learner.state_dict()) == ["ctx"]  # checkpoints hold the learned context only


def test_twin_is_deterministic_and_on_the_real_classes():
    a = BACKBONE_REGISTRY.get("TinyBiomedCLIP")()
    b = BACKBONE_REGISTRY.get("TinyBiomedCLIP")()
    assert a.cache_key() == b.cache_key()
    assert type(a.model.text.transformer).__name__ == "BertModel"
    assert type(a.model.visual.trunk).__name__ == "VisionTransformer"


def test_offline_without_weights_says_how_to_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="tools/download_weights.py BiomedCLIP"):
        BACKBONE_REGISTRY.get("BiomedCLIP")(get_cfg_default())


def test_weights_folder_that_does_not_exist_is_named(tmp_path):
    cfg = get_cfg_default()
    cfg.MODEL.BACKBONE.PATH = str(tmp_path / "nowhere")
    with pytest.raises(UserError, match="nowhere"):
        BACKBONE_REGISTRY.get("BiomedCLIP")(cfg)


def test_local_weights_folder_loads_the_saved_model(tmp_path, tiny_biomedclip):
    """The download layout (weights + text/config.json + text/vocab.txt) round-trips, strictly."""
    import json
    import os

    from backbones.biomedclip import _local_biomedclip, load_family_config
    from backbones.twins import toy_vocab

    config = load_family_config("TinyBiomedCLIP")
    folder = tmp_path / "BiomedCLIP"
    (folder / "text").mkdir(parents=True)
    torch.save(tiny_biomedclip.model.state_dict(), folder / "open_clip_pytorch_model.bin")
    (folder / "text" / "config.json").write_text(json.dumps(config["text_config"]))
    (folder / "text" / "vocab.txt").write_text("\n".join(toy_vocab()) + "\n")
    loaded = _local_biomedclip(str(folder), config, pretrained=True)
    ids = loaded.tokenize(PROMPTS)
    with torch.no_grad():
        assert torch.allclose(loaded.encode_text(ids), tiny_biomedclip.encode_text(ids), atol=1e-6)
    os.remove(folder / "open_clip_pytorch_model.bin")
    with pytest.raises(UserError, match="no open_clip_pytorch_model.bin"):
        _local_biomedclip(str(folder), config, pretrained=True)
