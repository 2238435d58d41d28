"""All four model families through the backbone contract, on their tiny offline twins.

Golden outputs (tests/golden/<Twin>.json) pin each twin's features on fixed inputs, in the manner
of open_clip's tests/test_inference.py; regenerate with `python tests/golden/make_golden.py` when
a change to them is intended.
"""

from __future__ import annotations

import json
import math
import os
import sys

import pytest
import torch

from engine.config import get_cfg_default
from engine.errors import UserError
from engine.registry import BACKBONE_REGISTRY
from trainers.prompt_learner import PromptLearner

GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
sys.path.insert(0, GOLDEN_DIR)
import make_golden  # noqa: E402

TWINS = make_golden.TWINS
REAL = ("CLIP", "PubMedCLIP", "PMCCLIP", "BiomedCLIP")
CLASSES = ["glioma tumor", "normal OCT scan", "lung squamous cell carcinoma"]
PROMPTS = [f"a photo of a {c}." for c in CLASSES]
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

_built: dict[str, object] = {}


def twin(name: str):
    if name not in _built:
        _built[name] = BACKBONE_REGISTRY.get(name)()
    return _built[name]


def test_every_family_and_twin_is_registered():
    names = set(BACKBONE_REGISTRY.registered_names())
    assert set(REAL) | set(TWINS) <= names


@pytest.mark.parametrize("name", TWINS)
def test_twin_builds_offline_and_deterministically(name):
    first = BACKBONE_REGISTRY.get(name)()
    assert first.cache_key() == BACKBONE_REGISTRY.get(name)().cache_key()


@pytest.mark.parametrize("name", TWINS)
def test_twin_matches_its_golden_outputs(name):
    with open(make_golden.path_of(name), encoding="utf-8") as f:
        expected = json.load(f)
    got = make_golden.compute(name)
    hint = f"{name} changed; if intended, regenerate with `python tests/golden/make_golden.py {name}`"
    assert got["token_ids"] == expected["token_ids"], hint
    assert got["real_lengths"] == expected["real_lengths"], hint
    for key in ("image_features", "image_norms", "text_features", "text_norms", "logit_scale"):
        torch.testing.assert_close(torch.tensor(got[key]), torch.tensor(expected[key]), atol=1e-4, rtol=1e-4,
                                   msg=lambda m, key=key: f"{hint}\n{key}: {m}")


@pytest.mark.parametrize("name", TWINS)
def test_contract_surface(name):
    model = twin(name)
    ids = model.tokenize(PROMPTS)
    assert ids.shape == (3, model.context_length) and ids.dtype == torch.long
    lengths = model.real_lengths(ids)
    assert model.trim(ids).shape == (3, int(lengths.max()))
    assert model.embed_tokens(ids).shape == (3, model.context_length, model.token_width)
    with torch.no_grad():
        feats = model.encode_image(make_golden.golden_images())
        text = model.encode_text(ids)
    assert feats.shape == (2, model.embed_dim) and text.shape == (3, model.embed_dim)
    assert model.image_size == 224 and model.interpolation == "bicubic"
    assert tuple(model.mean) == CLIP_MEAN and tuple(model.std) == CLIP_STD


def test_family_widths_and_logit_scales():
    assert twin("TinyCLIP").context_length == twin("TinyPubMedCLIP").context_length == 77
    assert twin("TinyPMCCLIP").context_length == 77
    assert twin("TinyBiomedCLIP").context_length == 256
    assert float(twin("TinyPMCCLIP").logit_scale.detach()) == pytest.approx(math.exp(4.4292))  # PMC-CLIP's constant
    # open_clip's initial temperature, 1/0.07
    assert float(twin("TinyCLIP").logit_scale.detach()) == pytest.approx(1 / 0.07, rel=1e-6)


@pytest.mark.parametrize("name", TWINS)
def test_spliced_trimmed_text_equals_the_models_own_encoding(name):
    model = twin(name)
    ids = model.tokenize(PROMPTS)
    trimmed = model.trim(ids)
    assert trimmed.shape[1] < model.context_length
    with torch.no_grad():
        own = model.encode_text(ids)  # full context length: the model's own path
        spliced = model.encode_text_embeddings(model.embed_tokens(trimmed), trimmed)
        own_trimmed = model.encode_text(trimmed)
    assert (own - spliced).abs().max() < 1e-5
    assert (own - own_trimmed).abs().max() < 1e-5


@pytest.mark.parametrize("name", TWINS)
def test_prompt_learner_from_a_photo_of_a_reproduces_plain_prompts(name):
    model = twin(name)
    learner = PromptLearner(model, CLASSES, n_ctx=4, ctx_init="a photo of a")
    assert learner.ctx.shape == (4, model.token_width)
    with torch.no_grad():
        learned = learner.text_features()
        plain = model.encode_text(model.tokenize(PROMPTS))
    assert (learned - plain).abs().max() < 1e-5


@pytest.mark.parametrize("name", ["TinyCLIP", "TinyPMCCLIP"])
def test_only_the_context_receives_gradients(name):
    model = BACKBONE_REGISTRY.get(name)()
    model.requires_grad_(False)
    learner = PromptLearner(model, CLASSES[:2], ctx_init="a photo of a")
    learner.text_features().sum().backward()
    assert learner.ctx.grad is not None and learner.ctx.grad.abs().sum() > 0


def test_clip_real_lengths_end_at_the_end_of_text_token():
    model = twin("TinyCLIP")
    ids = model.tokenize(["hi!", "a photo of a glioma tumor."])
    lengths = model.real_lengths(ids)
    assert (ids[torch.arange(2), lengths - 1] == 49407).all()  # <end_of_text>
    assert (ids[:, 0] == 49406).all()  # <start_of_text>


def test_pmcclip_batchnorm_features_do_not_depend_on_the_batch():
    """Eval-mode BatchNorm (running statistics): an image's cached feature is the same in any batch."""
    model = twin("TinyPMCCLIP")
    images = make_golden.golden_images()
    with torch.no_grad():
        together = model.encode_image(images)
        alone = model.encode_image(images[:1])
    assert (together[:1] - alone).abs().max() < 1e-5
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


# ----- weights: offline errors, local folders, full-size random architectures ---------------------
@pytest.mark.parametrize("name", REAL)
def test_offline_without_weights_names_the_download_tool(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("BIOMEDCOOP_WEIGHTS_DIR", raising=False)
    with pytest.raises(UserError, match=f"tools/download_weights.py {name} --dir") as err:
        BACKBONE_REGISTRY.get(name)(get_cfg_default())
    assert "BIOMEDCOOP_WEIGHTS_DIR" in str(err.value) and f"Tiny{name}" in str(err.value)


@pytest.mark.parametrize("name", ["CLIP", "PubMedCLIP", "PMCCLIP"])
def test_weights_folder_without_the_files_names_the_missing_file(name, tmp_path, monkeypatch):
    (tmp_path / name).mkdir()
    monkeypatch.setenv("BIOMEDCOOP_WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(UserError, match="does not exist") as err:
        BACKBONE_REGISTRY.get(name)(get_cfg_default())
    assert str(tmp_path / name) in str(err.value) and "download_weights.py" in str(err.value)


def _openai_format(model) -> dict:
    """A CLIP state dict as OpenAI's files hold it: fp16 matrices, plus the three metadata entries."""
    import copy

    from open_clip.model import convert_weights_to_lp

    half = copy.deepcopy(model)
    convert_weights_to_lp(half, torch.float16)
    state = dict(half.state_dict())
    state.update(input_resolution=torch.tensor(224), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    return state


def test_clip_loads_an_openai_state_dict_from_the_weights_folder(tmp_path):
    from backbones.clip import clip_family

    source = twin("TinyCLIP")
    (tmp_path / "TinyCLIP").mkdir()
    torch.save(_openai_format(source.model), tmp_path / "TinyCLIP" / "ViT-B-16.pt")  # not TorchScript: fallback
    cfg = get_cfg_default()
    cfg.MODEL.BACKBONE.PATH = str(tmp_path)
    loaded = clip_family("TinyCLIP", cfg)
    assert loaded.model.visual.conv1.weight.dtype == torch.float32
    ids = loaded.tokenize(PROMPTS)
    with torch.no_grad():
        diff = (loaded.encode_text(ids) - source.encode_text(ids)).abs().max()
    assert 0 < diff < 0.05  # the same weights, rounded to fp16 as in OpenAI's file


def test_clip_reads_a_torchscript_file_like_openais(tmp_path):
    import warnings

    from backbones.clip import clip_family

    source = twin("TinyCLIP")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace_module(source.model, {"encode_image": (make_golden.golden_images()[:1],)},
                                        check_trace=False)
    (tmp_path / "TinyCLIP").mkdir()
    traced.save(str(tmp_path / "TinyCLIP" / "ViT-B-16.pt"))
    cfg = get_cfg_default()
    cfg.MODEL.BACKBONE.PATH = str(tmp_path)
    loaded = clip_family("TinyCLIP", cfg).model
    assert torch.equal(loaded.visual.proj, source.model.visual.proj.half().float())
    assert torch.equal(loaded.positional_embedding, source.model.positional_embedding)


def test_pubmedclip_rounds_its_state_dict_through_fp16_like_the_reference(tmp_path):
    from backbones.clip import clip_family

    source = twin("TinyPubMedCLIP")
    state = {f"module.{k}": v for k, v in source.model.state_dict().items()}  # fp32, DataParallel-style keys
    (tmp_path / "TinyPubMedCLIP").mkdir()
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "TinyPubMedCLIP" / "PubMedCLIP_ViT32.pth")
    cfg = get_cfg_default()
    cfg.MODEL.BACKBONE.PATH = str(tmp_path / "TinyPubMedCLIP")
    loaded = clip_family("TinyPubMedCLIP", cfg).model
    conv = source.model.visual.conv1.weight
    assert torch.equal(loaded.visual.conv1.weight, conv.half().float())  # a matrix: rounded
    assert torch.equal(loaded.ln_final.weight, source.model.ln_final.weight)  # a LayerNorm: kept
    assert torch.equal(loaded.token_embedding.weight, source.model.token_embedding.weight)


def test_clip_weights_that_do_not_fit_give_a_clear_error(tmp_path):
    from backbones.clip import clip_family

    (tmp_path / "TinyPubMedCLIP").mkdir()
    wrong = {"state_dict": twin("TinyCLIP").model.state_dict()}  # another architecture's weights
    torch.save(wrong, tmp_path / "TinyPubMedCLIP" / "PubMedCLIP_ViT32.pth")
    cfg = get_cfg_default()
    cfg.MODEL.BACKBONE.PATH = str(tmp_path)
    with pytest.raises(UserError, match="do not fit"):
        clip_family("TinyPubMedCLIP", cfg)


def test_pmcclip_loads_its_three_checkpoint_files_and_text_folder(tmp_path):
    from backbones.base import load_family_config
    from backbones.pmcclip import _local_pmcclip
    from backbones.twins import toy_vocab

    source = twin("TinyPMCCLIP")
    config = load_family_config("TinyPMCCLIP")
    folder = tmp_path / "PMCCLIP"
    (folder / "text").mkdir(parents=True)
    torch.save(source.model.visual.state_dict(), folder / "image_encoder(resnet50).pth")
    torch.save(source.model.text.state_dict(), folder / "text_encoder.pth")
    torch.save(source.model.text_projection.detach().clone(), folder / "text_projection_layer.pth")
    (folder / "text" / "config.json").write_text(json.dumps(config["text_config"]))
    (folder / "text" / "vocab.txt").write_text("\n".join(toy_vocab()) + "\n")
    loaded = _local_pmcclip(str(folder), config, "TinyPMCCLIP")
    ids = loaded.tokenize(PROMPTS)
    assert torch.equal(ids, source.tokenize(PROMPTS))
    with torch.no_grad():
        assert torch.equal(loaded.encode_text(ids), source.encode_text(ids))
        images = make_golden.golden_images()
        assert torch.equal(loaded.encode_image(images), source.encode_image(images))
    os.remove(folder / "text_projection_layer.pth")
    with pytest.raises(UserError, match="text_projection_layer.pth does not exist"):
        _local_pmcclip(str(folder), config, "TinyPMCCLIP")


def test_full_size_pubmedclip_architecture_with_random_weights_builds_offline():
    """MODEL.BACKBONE.PRETRAINED False: the real ViT-B/32 CLIP, random weights, for benchmarks (about 1 s)."""
    cfg = get_cfg_default()
    cfg.MODEL.BACKBONE.PRETRAINED = False
    model = BACKBONE_REGISTRY.get("PubMedCLIP")(cfg)
    assert (model.context_length, model.token_width, model.embed_dim) == (77, 512, 512)
    assert model.model.visual.conv1.weight.shape == (768, 3, 32, 32)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(151.3e6, rel=0.01)
