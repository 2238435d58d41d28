"""The transformers CLIP / SigLIP family (backbones/hf_transformers.py) on its offline twins.

The splice must reproduce each model's own `get_text_features`, SigLIP's full-length padding and
missing start token must survive the prompt learner, a save_pretrained folder must load through
MODEL.BACKBONE.PATH, a broken folder must give a short message, and every method must run.
"""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
import torch.nn.functional as F
from test_download_weights import hub  # noqa: F401  (the local hub server fixture)
from test_trainers import make_trainer

import train
from backbones.hf_transformers import HFDualEncoder, read_preprocess, shrink_config, tiny_twin, write_folder
from engine.config import get_cfg_default
from engine.errors import UserError
from engine.registry import BACKBONE_REGISTRY, TRAINER_REGISTRY
from trainers.prompt_learner import PromptLearner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS = ("clip", "siglip")
TWIN = {"clip": "TinyHFCLIP", "siglip": "TinyHFSigLIP"}
FAMILY = {"clip": "HFCLIP", "siglip": "HFSigLIP"}
PROMPTS = ["a photo of a glioma tumor.", "X X X X meningioma.", "brain", "a normal chest x ray scan showing no mass."]

_twins: dict[str, HFDualEncoder] = {}


def twin(kind: str) -> HFDualEncoder:
    if kind not in _twins:
        _twins[kind] = tiny_twin(kind)
    return _twins[kind]


def pixels(n: int = 2, size: int = 224) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def own_text(bb: HFDualEncoder, ids: torch.Tensor) -> torch.Tensor:
    out = bb.model.get_text_features(input_ids=ids)
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def own_image(bb: HFDualEncoder, images: torch.Tensor) -> torch.Tensor:
    out = bb.model.get_image_features(pixel_values=images)
    return out if isinstance(out, torch.Tensor) else out.pooler_output


# ----- the contract --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_spliced_real_token_embeddings_give_the_models_own_text_features(kind):
    bb = twin(kind)
    full = bb.tokenize(PROMPTS)
    assert full.shape == (len(PROMPTS), bb.context_length)
    ids = bb.trim(full)
    with torch.no_grad():
        reference = own_text(bb, full)  # the model's own encoding of the padded rows
        spliced = bb.encode_text_embeddings(bb.embed_tokens(ids), ids)
        torch.testing.assert_close(spliced, reference, atol=1e-5, rtol=0)
        torch.testing.assert_close(bb.encode_text(ids), reference, atol=1e-5, rtol=0)
        torch.testing.assert_close(bb.encode_image(pixels()), own_image(bb, pixels()), atol=1e-5, rtol=0)
    assert reference.shape[1] == bb.embed_dim


def test_clip_pools_the_end_token_under_both_eos_rules_of_its_config():
    # Configs written before transformers fixed CLIP's eos id say 2 and pool the largest id; the
    # others pool the first eos_token_id. A row whose largest id is not the end token tells them apart.
    from transformers import CLIPModel

    bb = twin("clip")
    ids = bb.tokenize(PROMPTS)
    ids[0, 3] = 49406  # a start token inside the text: now the largest id before the end token
    ids = bb.trim(ids)
    for eos in (2, 49407):
        config = bb.model.config.__class__.from_dict(bb.model.config.to_dict())
        config.text_config.eos_token_id = eos
        model = CLIPModel(config)
        model.load_state_dict(bb.model.state_dict())
        other = HFDualEncoder(model, bb.tokenizer, "x")
        with torch.no_grad():
            torch.testing.assert_close(other.encode_text_embeddings(other.embed_tokens(ids), ids),
                                       own_text(other, ids), atol=1e-5, rtol=0)
    assert HFDualEncoder(model, bb.tokenizer, "x").legacy_eos is False


def test_clip_twin_tokenizes_like_openai_clip():
    from open_clip.tokenizer import SimpleTokenizer

    ours, theirs = twin("clip").tokenize(PROMPTS), SimpleTokenizer()(PROMPTS)
    lengths = twin("clip").real_lengths(ours)
    assert lengths.tolist() == (theirs.argmax(1) + 1).tolist()
    for row, n in enumerate(lengths.tolist()):
        assert ours[row, :n].tolist() == theirs[row, :n].tolist()
        assert (ours[row, n:] == 49407).all()  # transformers pads with the end token, not 0


def test_siglip_keeps_the_full_padded_row_because_padding_changes_its_feature():
    bb = twin("siglip")
    ids = bb.tokenize(PROMPTS)
    assert bb.start_tokens == 0 and bb.trim(ids).shape[1] == 64
    assert bb.real_lengths(ids).tolist() == [int((row == 1).int().argmax()) + 1 for row in ids]
    short = ids[:, : int(bb.real_lengths(ids).max())]
    with torch.no_grad():  # what trimming would do: another pooled token, another feature
        assert not torch.allclose(bb.encode_text(short), bb.encode_text(ids), atol=1e-3)


@pytest.mark.parametrize("kind", KINDS)
def test_context_initialised_from_words_reproduces_the_plain_prompts(kind):
    # The splice puts context right after the start tokens (none for SigLIP), so "a photo of a"
    # as initial context must encode exactly like the written prompts.
    bb = twin(kind)
    names = ["glioma tumor", "meningioma", "normal"]
    learner = PromptLearner(bb, names, ctx_init="a photo of a")
    assert learner.token_prefix.shape[1] == bb.start_tokens and learner.n_ctx == 4
    with torch.no_grad():
        torch.testing.assert_close(learner.text_features(),
                                   bb.encode_prompts([f"a photo of a {c}." for c in names]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_logits_are_scale_times_cosine_and_siglips_bias_changes_no_class_softmax(kind):
    bb = twin(kind)
    ids, images = bb.tokenize(PROMPTS), pixels(3)
    with torch.no_grad():
        text = F.normalize(bb.encode_text(bb.trim(ids)), dim=-1)
        image = F.normalize(bb.encode_image(images), dim=-1)
        ours = bb.logit_scale * image @ text.t()
        theirs = bb.model(input_ids=ids, pixel_values=images).logits_per_image
    assert bb.logit_scale.dim() == 0
    bias = float(bb.model.logit_bias.detach()) if kind == "siglip" else 0.0
    torch.testing.assert_close(theirs, ours + bias, atol=1e-4, rtol=0)
    torch.testing.assert_close(theirs.softmax(dim=1), ours.softmax(dim=1), atol=1e-5, rtol=0)
    if kind == "siglip":
        assert bias == -10.0 and float(bb.logit_scale.detach()) == pytest.approx(10.0)


def test_preprocessing_comes_from_the_family_and_the_processor_file(tmp_path):
    from transformers import SiglipImageProcessor

    assert (twin("clip").mean, twin("clip").interpolation) == ((0.48145466, 0.4578275, 0.40821073), "bicubic")
    assert (twin("siglip").mean, twin("siglip").std, twin("siglip").interpolation) == ((0.5,) * 3, (0.5,) * 3,
                                                                                       "bicubic")
    SiglipImageProcessor(image_mean=[0.4, 0.4, 0.4], image_std=[0.3, 0.3, 0.3], resample=2).save_pretrained(tmp_path)
    assert read_preprocess(str(tmp_path / "preprocessor_config.json")) == {
        "mean": (0.4, 0.4, 0.4), "std": (0.3, 0.3, 0.3), "interpolation": "bilinear"}
    refused = r'224x224 images, got 96x96.*INPUT.SIZE "\(224,224\)" INPUT.PIXEL_MEAN "\[0.5,0.5,0.5\]"'
    with pytest.raises(UserError, match=refused):
        twin("siglip").encode_image(pixels(1, 96))


def test_shrink_config_keeps_vocabulary_context_and_image_size():
    from transformers import SiglipConfig

    big = SiglipConfig(vision_config={"image_size": 448, "patch_size": 14})
    small = shrink_config(big)
    assert (small.vision_config.image_size, small.vision_config.patch_size) == (448, 64)
    assert small.text_config.vocab_size == big.text_config.vocab_size and small.text_config.hidden_size == 64
    assert small.text_config.projection_size == small.vision_config.hidden_size
    assert big.vision_config.hidden_size == 768  # the original is untouched


def test_twins_are_registered_and_deterministic():
    assert {"HFCLIP", "HFSigLIP", "TinyHFCLIP", "TinyHFSigLIP"} <= set(BACKBONE_REGISTRY.registered_names())
    for kind in KINDS:
        assert BACKBONE_REGISTRY.get(TWIN[kind])().cache_key() == twin(kind).cache_key()


# ----- folders and hub ids -------------------------------------------------------------------------
def cfg_for(family: str, path: str = "", hub: str = ""):  # noqa: F811 (an argument, not the fixture)
    cfg = get_cfg_default()
    cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.PATH, cfg.MODEL.BACKBONE.HUB = family, path, hub
    return cfg


def save_folder(kind: str, folder) -> str:
    return write_folder(twin(kind), str(folder))


@pytest.mark.parametrize("kind", KINDS)
def test_a_save_pretrained_folder_loads_through_backbone_path_and_matches(kind, tmp_path):
    folder = save_folder(kind, tmp_path / "model")
    loaded = BACKBONE_REGISTRY.get(FAMILY[kind])(cfg_for(FAMILY[kind], path=folder))
    bb = twin(kind)
    assert (loaded.name, loaded.start_tokens, loaded.mean, loaded.interpolation) == (
        FAMILY[kind], bb.start_tokens, bb.mean, bb.interpolation)
    ids = loaded.tokenize(PROMPTS)
    assert torch.equal(ids, bb.tokenize(PROMPTS))
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(loaded.trim(ids)), bb.encode_text(bb.trim(ids)))
        torch.testing.assert_close(loaded.encode_image(pixels()), bb.encode_image(pixels()))
    assert float(loaded.logit_scale.detach()) == pytest.approx(float(bb.logit_scale.detach()))


@pytest.mark.parametrize("kind", KINDS)
def test_download_weights_fetches_a_transformers_repo_that_then_loads_offline(kind, hub, tmp_path,  # noqa: F811
                                                                              monkeypatch):
    import download_weights

    source = save_folder(kind, tmp_path / "source")
    repo = f"example-org/tiny-{kind}"
    for name in os.listdir(source):  # the repository as the hub serves it; weights as an LFS file
        with open(os.path.join(source, name), "rb") as f:
            hub.add(f"/{repo}/resolve/main/{name}", f.read(), lfs=name.endswith(".safetensors"))
    weights = tmp_path / "WEIGHTS"
    argv = [repo, "--dir", str(weights), "--hf-endpoint", hub.url, "--quiet"]
    assert download_weights.main(argv) == 0
    assert sorted(os.listdir(weights / f"example-org--tiny-{kind}")) == sorted([*os.listdir(source), ".download.json"])
    hits = len(hub.hits)
    assert download_weights.main(argv) == 0
    assert not [h for h in hub.hits[hits:] if h.endswith(".safetensors")]  # complete weights are not fetched again

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = BACKBONE_REGISTRY.get(FAMILY[kind])(cfg_for(FAMILY[kind], path=str(weights), hub=repo))
    bb = twin(kind)
    ids = bb.tokenize(PROMPTS)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(loaded.trim(ids)), bb.encode_text(bb.trim(ids)))


def test_random_weights_of_a_folders_architecture_need_no_weights_file(tmp_path):
    folder = save_folder("siglip", tmp_path / "model")
    os.remove(os.path.join(folder, "model.safetensors"))
    cfg = cfg_for("HFSigLIP", path=folder)
    cfg.MODEL.BACKBONE.PRETRAINED = False
    random = BACKBONE_REGISTRY.get("HFSigLIP")(cfg)
    assert random.cache_key() != twin("siglip").cache_key()  # another draw of the same architecture
    assert {k: v.shape for k, v in random.state_dict().items()} == {
        k: v.shape for k, v in twin("siglip").state_dict().items()}


def test_folder_with_weights_of_another_architecture_gives_a_short_message(tmp_path):
    folder = save_folder("siglip", tmp_path / "model")
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    config["text_config"]["num_hidden_layers"] = 3  # a config from another model than the weights
    config["vision_config"]["hidden_size"] = 96
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f)
    with pytest.raises(UserError) as err:
        BACKBONE_REGISTRY.get("HFSigLIP")(cfg_for("HFSigLIP", path=folder))
    message = str(err.value)
    assert folder in message and "model.safetensors" in message and "config.json" in message
    assert "missing (16): text_model.encoder.layers.2." in message
    assert "other shape (" in message and "(64,) in the file, (96,) by config.json" in message
    assert "Likely cause" in message and len(message.splitlines()) <= 7


def test_truncated_weights_and_wrong_family_are_explained(tmp_path):
    folder = save_folder("clip", tmp_path / "model")
    with pytest.raises(UserError, match=r"holds a clip model; use MODEL.BACKBONE.NAME HFCLIP"):
        BACKBONE_REGISTRY.get("HFSigLIP")(cfg_for("HFSigLIP", path=folder))
    weights = os.path.join(folder, "model.safetensors")
    with open(weights, "r+b") as f:
        f.truncate(os.path.getsize(weights) // 2)
    with pytest.raises(UserError, match=r"(?s)cannot be read.*model.safetensors.*truncated or interrupted download"):
        BACKBONE_REGISTRY.get("HFCLIP")(cfg_for("HFCLIP", path=folder))
    os.remove(weights)
    with pytest.raises(UserError, match=r"not available on this machine: no model.safetensors"):
        BACKBONE_REGISTRY.get("HFCLIP")(cfg_for("HFCLIP", path=folder))


def test_no_model_named_or_hub_id_offline_fails_fast_with_the_fix():
    with pytest.raises(UserError, match=r"MODEL.BACKBONE.HUB google/medsiglip-448"):
        BACKBONE_REGISTRY.get("HFSigLIP")(cfg_for("HFSigLIP"))
    # How fast this comes from process start is measured by benchmarks/bench_offline_error.py.
    with pytest.raises(UserError) as err:  # HF_HUB_OFFLINE=1 (conftest) and nothing cached
        BACKBONE_REGISTRY.get("HFSigLIP")(cfg_for("HFSigLIP", hub="google/medsiglip-448"))
    assert "HF_HUB_OFFLINE=1" in str(err.value)
    assert "python tools/download_weights.py google/medsiglip-448 --dir WEIGHTS" in str(err.value)
    assert "MODEL.BACKBONE.PATH WEIGHTS/google--medsiglip-448" in str(err.value)
    assert "TinyHFSigLIP" in str(err.value)


# ----- training ------------------------------------------------------------------------------------
def run(root, trainer: str, config: str, tmp_path, *extra) -> dict:
    code = train.main([
        "--root", root, "--seed", "1", "--trainer", trainer,
        "--dataset-config-file", os.path.join(REPO, "configs/datasets/btmri.yaml"),
        "--config-file", os.path.join(REPO, config), "--output-dir", str(tmp_path),
        "DATASET.NUM_SHOTS", "2", "DATALOADER.NUM_WORKERS", "0", *extra,
    ])
    assert code == 0
    with open(tmp_path / "results.json", encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.parametrize("twin_name", TWIN.values())
@pytest.mark.parametrize("method,config", [("CoOp", "configs/trainers/CoOp/vit_b16.yaml"),
                                           ("BiomedCoOp", "configs/trainers/BiomedCoOp/few_shot/btmri.yaml")])
def test_coop_and_biomedcoop_train_on_both_transformers_twins(synthetic_btmri, tmp_path, method, config, twin_name):
    t = make_trainer(synthetic_btmri, f"{method}_{twin_name}", config, tmp_path, "OPTIM.MAX_EPOCH", "2")
    start = t.prompt_learner.ctx.detach().clone()
    t.train()
    assert not torch.equal(start, t.prompt_learner.ctx.detach())  # the context learned
    with open(tmp_path / "results.json", encoding="utf-8") as f:
        result = json.load(f)
    assert result["total"] > 0 and 0.0 <= result["accuracy"] <= 100.0  # the test split was evaluated


# Each method with its few-shot config and the smallest run its config allows.
METHOD_RUNS = {
    "BiomedCoOp": ("configs/trainers/BiomedCoOp/few_shot/btmri.yaml", ["OPTIM.MAX_EPOCH", "1"]),
    "CoOp": ("configs/trainers/CoOp/vit_b16.yaml", ["OPTIM.MAX_EPOCH", "1"]),
    "CoCoOp": ("configs/trainers/CoCoOp/vit_b16.yaml", ["OPTIM.MAX_EPOCH", "1"]),
    "KgCoOp": ("configs/trainers/KgCoOp/few_shot/btmri.yaml", ["OPTIM.MAX_EPOCH", "1"]),
    "ProGrad": ("configs/trainers/ProGrad/few_shot/btmri.yaml", ["OPTIM.MAX_EPOCH", "1"]),
    "ZeroShot": ("configs/trainers/ZeroShot/vit_b16.yaml", []),
    "ZeroShotEnsemble": ("configs/trainers/ZeroShot/vit_b16.yaml", []),
    "ClipAdapter": ("configs/trainers/ClipAdapter/few_shot.yaml", ["OPTIM.MAX_EPOCH", "1"]),
    "TipAdapter": ("configs/trainers/TipAdapter/few_shot.yaml", []),
    "TipAdapterF": ("configs/trainers/TipAdapterF/few_shot.yaml", ["OPTIM.MAX_EPOCH", "1"]),
    "LinearProbe": ("configs/trainers/LinearProbe/few_shot.yaml", []),
    "LPPlusPlus": ("configs/trainers/LPPlusPlus/few_shot.yaml", ["OPTIM.MAX_EPOCH", "1"]),
    "CLIPLoRA": ("configs/trainers/CLIPLoRA/default.yaml", ["TRAINER.CLIPLORA.ITERS_PER_SHOT", "1"]),
    "CLIPSVD": ("configs/trainers/CLIPSVD/few_shot/btmri.yaml", ["OPTIM.MAX_EPOCH", "1"]),
    "OGKD": ("configs/trainers/OGKD/few_shot/btmri.yaml", ["OPTIM.MAX_EPOCH", "1"]),
    "MaPLe": ("configs/trainers/MaPLe/default.yaml", ["OPTIM.MAX_EPOCH", "1"]),
    "EviSteer": ("configs/trainers/EviSteer/default.yaml", ["TRAIN.TRIAL_EPOCHS", "1"]),
    "BiomedDPT": ("configs/trainers/BiomedDPT/few_shot/btmri.yaml", ["OPTIM.MAX_EPOCH", "1"]),
    "GDA": ("configs/trainers/GDA/few_shot/default.yaml", []),
}


def test_every_registered_method_has_a_run_here():
    assert set(TRAINER_REGISTRY.registered_names()) <= set(METHOD_RUNS)


# Every other method on the transformers family (CoOp and BiomedCoOp train on both twins above); the
# two twins alternate so each kind sees half of them and the whole set stays cheap.
OTHER_METHODS = sorted(set(METHOD_RUNS) - {"CoOp", "BiomedCoOp"})


@pytest.mark.parametrize("index,method", list(enumerate(OTHER_METHODS)))
def test_every_method_runs_on_the_transformers_family(synthetic_btmri, tmp_path, index, method):
    if method not in TRAINER_REGISTRY:
        pytest.skip(f"{method} is not registered")
    config, extra = METHOD_RUNS[method]
    model = ("TinyHFSigLIP", "TinyHFCLIP")[index % 2]
    result = run(synthetic_btmri, f"{method}_{model}", config, tmp_path, *extra)
    assert 0.0 <= result["accuracy"] <= 100.0 and result["total"] > 0


def test_a_hub_id_finds_its_folder_under_backbone_path_or_the_weights_variable(tmp_path, monkeypatch):
    save_folder("clip", tmp_path / "WEIGHTS" / "example--tiny-clip")  # as `hf download --local-dir` writes it
    ids = twin("clip").tokenize(PROMPTS)
    for path in (str(tmp_path / "WEIGHTS"), ""):
        if not path:
            monkeypatch.setenv("BIOMEDCOOP_WEIGHTS_DIR", str(tmp_path / "WEIGHTS"))
        loaded = BACKBONE_REGISTRY.get("HFCLIP")(cfg_for("HFCLIP", path=path, hub="example/tiny-clip"))
        with torch.no_grad():  # found locally: HF_HUB_OFFLINE=1 and an empty cache do not matter
            torch.testing.assert_close(loaded.encode_text(ids), twin("clip").encode_text(ids))
    monkeypatch.delenv("BIOMEDCOOP_WEIGHTS_DIR")
    with pytest.raises(UserError, match="has no config.json"):
        BACKBONE_REGISTRY.get("HFCLIP")(cfg_for("HFCLIP", path=str(tmp_path), hub="example/tiny-clip"))


def test_a_hub_id_already_in_the_hugging_face_cache_loads_offline(tmp_path, monkeypatch):
    # The cache layout the hub library writes: models--ORG--NAME/refs/main -> snapshots/<commit>/.
    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--example--tiny-siglip"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    save_folder("siglip", repo / "snapshots" / commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    loaded = BACKBONE_REGISTRY.get("HFSigLIP")(cfg_for("HFSigLIP", hub="example/tiny-siglip"))
    ids = loaded.tokenize(PROMPTS)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(ids), twin("siglip").encode_text(ids))
    with pytest.raises(UserError, match="holds a siglip model; use MODEL.BACKBONE.NAME HFSigLIP"):
        BACKBONE_REGISTRY.get("HFCLIP")(cfg_for("HFCLIP", hub="example/tiny-siglip"))


def test_loading_logs_the_input_options_that_match_the_models_processor(tmp_path):
    import logging

    from engine.utils import get_logger

    folder = save_folder("siglip", tmp_path / "model")
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    get_logger().addHandler(handler)
    try:
        cfg = cfg_for("HFSigLIP", path=folder)  # INPUT.* defaults: OpenAI CLIP's mean and std
        BACKBONE_REGISTRY.get("HFSigLIP")(cfg)
        assert len(seen) == 1 and 'INPUT.PIXEL_MEAN "[0.5,0.5,0.5]" INPUT.PIXEL_STD "[0.5,0.5,0.5]"' in seen[0]
        cfg.INPUT.PIXEL_MEAN, cfg.INPUT.PIXEL_STD = [0.5] * 3, [0.5] * 3
        BACKBONE_REGISTRY.get("HFSigLIP")(cfg)
        assert len(seen) == 1  # matching options: nothing to say
    finally:
        get_logger().removeHandler(handler)


def test_results_name_the_model_not_just_the_family(tmp_path):
    from engine.trainer import backbone_label

    assert backbone_label(cfg_for("HFSigLIP", hub="google/medsiglip-448")) == "HFSigLIP-google--medsiglip-448"
    assert backbone_label(cfg_for("HFCLIP", path=str(tmp_path / "my-clip") + "/")) == "HFCLIP-my-clip"


def test_readme_explains_this_familys_messages():
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        section = f.read().split("## When something goes wrong", 1)[1].split("\n## ", 1)[0]
    with open(os.path.join(REPO, "backbones/hf_transformers.py"), encoding="utf-8") as f:
        source = f.read()
    for phrase in ["expects other image preprocessing than the INPUT.* options",
                   "the weights do not fit the architecture config.json describes", "use MODEL.BACKBONE.NAME"]:
        assert phrase in source and phrase in section, phrase


@pytest.mark.parametrize("kind", KINDS)
def test_tower_tuning_finds_every_layers_attention_and_mlp_but_not_the_pooling_head(kind):
    from trainers.tower_tuning import find_weights

    bb = twin(kind)
    found = find_weights(bb)
    for tower in ("image", "text"):
        roles = sorted((w.layer, w.role) for w in found if w.tower == tower)
        assert roles == sorted((layer, role) for layer in (0, 1) for role in ("q", "k", "v", "o", "mlp", "mlp"))
    assert not [w.name for w in found if ".head." in w.name]  # SigLIP's probe cross-attention stays frozen


@pytest.mark.parametrize("name", TWIN.values())
def test_twin_matches_its_golden_outputs(name):
    # Pins the twins against changes in our code or in transformers' initialisation, like the other
    # families' twins (tests/test_backbones.py); regenerate with tests/golden/make_golden.py NAME.
    sys.path.insert(0, os.path.join(REPO, "tests", "golden"))
    import make_golden

    with open(make_golden.path_of(name), encoding="utf-8") as f:
        expected = json.load(f)
    got = make_golden.compute(name)
    assert got["token_ids"] == expected["token_ids"] and got["real_lengths"] == expected["real_lengths"]
    for key in ("image_features", "image_norms", "text_features", "text_norms", "logit_scale"):
        torch.testing.assert_close(torch.tensor(got[key]), torch.tensor(expected[key]), atol=1e-4, rtol=1e-4)


def test_a_finished_seed_is_not_reused_for_another_model_of_the_family(synthetic_btmri, tmp_path, capsys):
    # MODEL.BACKBONE.PATH is only a location for the named families, but it picks the model here:
    # the scripts' --skip-finished must not take model B's seed for model A's finished one.
    first, second = save_folder("siglip", tmp_path / "model-a"), save_folder("siglip", tmp_path / "model-b")
    out = tmp_path / "out"
    args = ["--root", synthetic_btmri, "--seed", "1", "--trainer", "ZeroShot_HFSigLIP", "--skip-finished",
            "--dataset-config-file", os.path.join(REPO, "configs/datasets/btmri.yaml"),
            "--config-file", os.path.join(REPO, "configs/trainers/ZeroShot/vit_b16.yaml"), "--output-dir", str(out),
            "DATASET.NUM_SHOTS", "2", "DATALOADER.NUM_WORKERS", "0"]
    assert train.main([*args, "MODEL.BACKBONE.PATH", first]) == 0
    with open(out / "results.json", encoding="utf-8") as f:
        assert json.load(f)["config"]["run.model"] == "HFSigLIP-model-a"
    capsys.readouterr()
    assert train.main([*args, "MODEL.BACKBONE.PATH", first]) == 0  # the same model: skipped
    assert "Skip this job" in capsys.readouterr().out
    assert train.main([*args, "MODEL.BACKBONE.PATH", second]) == 2
    assert "run.model: 'HFSigLIP-model-a' -> 'HFSigLIP-model-b'" in capsys.readouterr().err


def test_a_gemma_style_tokenizer_with_a_start_token_and_its_own_padding_splices_correctly():
    # SigLIP 2 / MedSigLIP-style tokenizers may add <bos>, pad with <pad> (not the end token) and add
    # no end token: real lengths count non-padding, the context goes after <bos>, the words stay.
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import PreTrainedTokenizerFast, SiglipModel

    from backbones.hf_transformers import tiny_config, toy_unigram_pieces
    from backbones.twins import seeded

    pieces = [("<pad>", 0.0), ("<eos>", 0.0), ("<bos>", 0.0), ("<unk>", 0.0)] + toy_unigram_pieces()[3:]
    tok = Tokenizer(Unigram(pieces, unk_id=3))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 2)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                        pad_token="<pad>", unk_token="<unk>", model_max_length=64)
    config = tiny_config("siglip")
    config.text_config.vocab_size, config.text_config.pad_token_id = len(pieces), 0
    with seeded():
        bb = HFDualEncoder(SiglipModel(config), tokenizer, "gemma-style")
    ids = bb.tokenize(["a photo of a glioma tumor.", "brain"])
    assert (bb.start_tokens, bb.end_tokens) == (1, 0) and ids[:, 0].tolist() == [2, 2]
    assert bb.real_lengths(ids).tolist() == [int((row != 0).sum()) for row in ids] and bb.real_lengths(ids)[1] == 2
    names = ["glioma tumor", "meningioma"]
    learner = PromptLearner(bb, names, ctx_init="a photo of a")
    assert learner.n_ctx == 4 and learner.token_prefix.shape[1] == 1
    with torch.no_grad():
        written = own_text(bb, bb.tokenize([f"a photo of a {c}." for c in names]))
        torch.testing.assert_close(learner.text_features(), written, atol=1e-5, rtol=0)
