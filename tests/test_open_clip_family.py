"""The OpenCLIP family: folders open_clip writes, every text-tower kind, tiny twins, clear weight errors.

Models here are tiny and randomly initialised; folders are written the way open_clip writes them
(`open_clip.push_to_hf_hub.save_for_hf`: open_clip_config.json, the weights, the tokenizer files),
plus `text/config.json` for an HF text tower, as tools/download_weights.py lays it out.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import download_weights
import pytest
import torch
from test_download_weights import hub  # noqa: F401  (the local hub server fixture)

import train
from backbones.open_clip_family import (
    build_open_clip,
    open_clip_tokenizer,
    shrink_hf_text_config,
    shrink_open_clip_config,
    tiny_hf_text_config,
    wrap,
    write_folder,
)
from backbones.twins import TINY_VIT, toy_vocab
from engine.config import get_cfg_default
from engine.errors import UserError
from engine.registry import BACKBONE_REGISTRY
from engine.utils import read_json

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = ["a photo of a glioma tumor.", "normal brain mri scan", "a photo of a lung squamous cell carcinoma."]
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)  # not the CLIP defaults: the folder's own must be used
FAKE_TEXT_HUB = "example-org/tiny-bert"  # named in the config as a real folder would be; never fetched


def hf_text_dir(path, model_type: str = "bert") -> str:
    """A local HF text model folder (config + toy WordPiece vocabulary), like backbones.twins.bert_folder."""
    config = shrink_hf_text_config(tiny_hf_text_config(), width=48, layers=1)
    if model_type == "roberta":  # positions counted from padding_idx + 1, as RoBERTa does
        config.update(model_type="roberta", architectures=["RobertaModel"], type_vocab_size=1,
                      max_position_embeddings=config["max_position_embeddings"] + 2)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config, f)
    with open(os.path.join(path, "vocab.txt"), "w") as f:
        f.write("\n".join(toy_vocab()) + "\n")
    with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 256}, f)
    return str(path)


def vit_bert_config() -> dict:
    """Unlike BiomedCLIP: open_clip's own ViT (not timm), a 1-layer 48-wide BERT, mean pooling, linear projection."""
    return {
        "embed_dim": 24,
        "vision_cfg": {"image_size": 224, "layers": 1, "width": 48, "head_width": 24, "patch_size": 32},
        "text_cfg": {"hf_model_name": FAKE_TEXT_HUB, "hf_tokenizer_name": FAKE_TEXT_HUB,
                     "hf_proj_type": "linear", "hf_pooler_type": "mean_pooler", "context_length": 64},
    }


def text_transformer_config(custom_text: bool) -> dict:
    """open_clip's ViT-B-16 shrunk; custom_text puts its TextTransformer inside CustomTextCLIP (as .text)."""
    import open_clip

    config = shrink_open_clip_config(open_clip.get_model_config("ViT-B-16"))
    if custom_text:
        config["custom_text"] = True
    return config


class _BundledTokenizer:
    """open_clip's OpenAI BPE ships with the package: nothing to save beside the model."""

    def save_pretrained(self, dest):
        pass


def write_open_clip_folder(folder, model_cfg: dict, tmp_path, seed: int = 0):
    """Build a random model from `model_cfg` and save it with open_clip's own writer; returns the model."""
    from open_clip.model import set_model_preprocess_cfg
    from open_clip.push_to_hf_hub import save_for_hf
    from open_clip.tokenizer import HFTokenizer

    build_cfg = copy.deepcopy(model_cfg)
    tokenizer = _BundledTokenizer()
    if "hf_model_name" in build_cfg["text_cfg"]:
        local = hf_text_dir(tmp_path / f"hf-{seed}")
        build_cfg["text_cfg"].update(hf_model_name=local, hf_model_pretrained=False)
        tokenizer = HFTokenizer(local, context_length=build_cfg["text_cfg"]["context_length"])
        os.makedirs(os.path.join(folder, "text"), exist_ok=True)
        with open(os.path.join(local, "config.json")) as src:
            text = src.read()
        with open(os.path.join(folder, "text", "config.json"), "w") as dst:
            dst.write(text)
    torch.manual_seed(seed)
    model = build_open_clip(build_cfg, "test", build_cfg["text_cfg"].get("hf_model_name"))
    set_model_preprocess_cfg(model, {"size": 224, "mean": MEAN, "std": STD, "interpolation": "bilinear"})
    save_for_hf(model, tokenizer, model_cfg, str(folder), safe_serialization=False)
    return model


def cfg_for(folder: str = "", hub_id: str = ""):
    cfg = get_cfg_default()
    cfg.MODEL.BACKBONE.NAME = "OpenCLIP"
    cfg.MODEL.BACKBONE.PATH = str(folder)
    cfg.MODEL.BACKBONE.HUB = hub_id
    return cfg


BIOMEDCOOP_CONFIG = "configs/trainers/BiomedCoOp/few_shot/btmri.yaml"


def run_train(root, out, *opts, trainer="BiomedCoOp_OpenCLIP", config=BIOMEDCOOP_CONFIG):
    return train.main([
        "--root", root, "--seed", "1", "--trainer", trainer,
        "--dataset-config-file", os.path.join(REPO, "configs/datasets/btmri.yaml"),
        "--config-file", os.path.join(REPO, config), "--output-dir", str(out),
        "DATASET.NUM_SHOTS", "2", "DATALOADER.NUM_WORKERS", "0", "OPTIM.MAX_EPOCH", "2", *opts,
    ])


# ----- the done-when: a folder with another architecture loads by PATH and trains -------------------
def test_folder_with_another_architecture_loads_and_trains_biomedcoop(synthetic_btmri, tmp_path, capsys):
    folder = tmp_path / "tiny-vit-bert"
    source = write_open_clip_folder(folder, vit_bert_config(), tmp_path)
    assert sorted(os.listdir(folder))[:2] == ["open_clip_config.json", "open_clip_pytorch_model.bin"]
    loaded = BACKBONE_REGISTRY.get("OpenCLIP")(cfg_for(folder))
    assert type(loaded.model).__name__ == "CustomTextCLIP"
    assert type(loaded.model.visual).__name__ == "VisionTransformer"  # open_clip's, not a timm trunk
    assert loaded.embed_dim == 24 and loaded.token_width == 48 and loaded.context_length == 64
    assert (loaded.mean, loaded.std, loaded.interpolation) == (MEAN, STD, "bilinear")  # the folder's preprocess_cfg
    ids = loaded.tokenize(PROMPTS)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(ids), source.encode_text(ids))  # the saved weights, exactly
    # The BiomedCLIP preset pointed at the same folder honours the folder's config too.
    biomed = get_cfg_default()
    biomed.MODEL.BACKBONE.PATH = str(folder)
    assert BACKBONE_REGISTRY.get("BiomedCLIP")(biomed).embed_dim == 24

    assert run_train(synthetic_btmri, tmp_path / "out", "MODEL.BACKBONE.PATH", str(folder)) == 0
    record = read_json(str(tmp_path / "out" / "results.json"))
    assert record["backbone"] == "OpenCLIP-tiny-vit-bert"  # which OpenCLIP model, in the results
    assert record["epochs"] == 2 and 0 <= record["accuracy"] <= 100


def test_text_transformer_tower_in_custom_text_clip_loads_and_trains_coop(synthetic_btmri, tmp_path):
    folder = tmp_path / "tiny-custom-text"
    source = write_open_clip_folder(folder, text_transformer_config(custom_text=True), tmp_path)
    loaded = BACKBONE_REGISTRY.get("OpenCLIP")(cfg_for(folder))
    assert type(loaded.model).__name__ == "CustomTextCLIP"
    assert type(loaded.model.text).__name__ == "TextTransformer"
    ids = loaded.tokenize(PROMPTS)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(ids), source.encode_text(ids))
    assert run_train(synthetic_btmri, tmp_path / "out", "MODEL.BACKBONE.PATH", str(folder),
                     trainer="CoOp_OpenCLIP", config="configs/trainers/CoOp/vit_b16.yaml") == 0


# ----- the splice, per text-tower kind -----------------------------------------------------------
def _tower(kind: str, tmp_path):
    """A tiny backbone of one text-tower kind, built through the family's own build path."""
    if kind in ("clip", "custom_text"):
        config = text_transformer_config(custom_text=kind == "custom_text")
        local = None
    else:
        config = vit_bert_config()
        local = hf_text_dir(tmp_path / kind, "roberta" if kind == "hf_roberta" else "bert")
        if kind == "hf_bert_cls":
            config["text_cfg"].update(hf_pooler_type="cls_last_hidden_state_pooler", hf_proj_type="mlp")
    torch.manual_seed(0)
    model = build_open_clip(config, kind, local)
    return wrap(model, open_clip_tokenizer(config["text_cfg"], local, kind), kind)


@pytest.mark.parametrize("kind", ["clip", "custom_text", "hf_bert", "hf_bert_cls", "hf_roberta"])
def test_spliced_trimmed_encoding_equals_the_models_own(kind, tmp_path):
    backbone = _tower(kind, tmp_path).eval()
    ids = backbone.tokenize(PROMPTS)
    trimmed = backbone.trim(ids)
    assert trimmed.shape[1] < ids.shape[1]  # padding really is dropped
    with torch.no_grad():
        own = backbone.encode_text(ids)  # the model's own encode_text at full length
        spliced = backbone.encode_text_embeddings(backbone.embed_tokens(trimmed), trimmed)
    assert own.shape == (3, backbone.embed_dim)
    assert (own - spliced).abs().max() < 1e-5


def test_image_tower_kinds_come_from_the_config():
    """open_clip ViT, timm and ModifiedResNet image towers, shrunk from open_clip's own configs."""
    import open_clip

    images = torch.randn(2, 3, 224, 224)
    for arch, tower in (("ViT-B-16", "VisionTransformer"), ("RN50", "ModifiedResNet"),
                        ("ViT-B-16-SigLIP", "TimmModel")):
        config = shrink_open_clip_config(open_clip.get_model_config(arch))
        backbone = wrap(build_open_clip(config, arch), None, arch)
        assert type(backbone.model.visual).__name__ == tower
        with torch.no_grad():
            assert backbone.encode_image(images).shape == (2, backbone.embed_dim)


def test_shrink_keeps_the_tower_kinds_and_options_and_leaves_its_input_alone():
    import open_clip

    original = open_clip.get_model_config("ViT-B-16-SigLIP")
    before = copy.deepcopy(original)
    small = shrink_open_clip_config({"model_cfg": original, "preprocess_cfg": {"mean": [0.5] * 3}})
    assert original == before
    model_cfg = small["model_cfg"]
    assert model_cfg["vision_cfg"]["timm_model_name"] == TINY_VIT
    assert model_cfg["text_cfg"]["width"] == 64 and model_cfg["text_cfg"]["layers"] == 2
    for key in ("no_causal_mask", "pool_type", "vocab_size", "context_length", "hf_tokenizer_name"):
        assert model_cfg["text_cfg"].get(key) == before["text_cfg"].get(key)
    assert small["preprocess_cfg"] == {"mean": [0.5] * 3}
    assert model_cfg.get("init_logit_bias") == before.get("init_logit_bias")


def test_tiny_open_clip_twin_shrinks_the_named_architecture_and_round_trips_through_a_folder(tmp_path):
    twin = BACKBONE_REGISTRY.get("TinyOpenCLIP")()
    assert type(twin.model).__name__ == "CLIP" and twin.context_length == 77 and twin.token_width == 64
    cfg = cfg_for(hub_id="RN50")
    resnet = BACKBONE_REGISTRY.get("TinyOpenCLIP")(cfg)
    assert type(resnet.model.visual).__name__ == "ModifiedResNet"
    assert twin.cache_key() == BACKBONE_REGISTRY.get("TinyOpenCLIP")().cache_key()  # seeded: reproducible
    write_folder(resnet, str(tmp_path / "rn50"))  # what the docs' offline trial does
    loaded = BACKBONE_REGISTRY.get("OpenCLIP")(cfg_for(tmp_path / "rn50"))
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(images), resnet.encode_image(images))


# ----- weights that do not fit: a few clear lines, exit 2, no traceback ---------------------------
def test_weights_of_another_architecture_give_a_short_message(synthetic_btmri, tmp_path, capsys):
    folder = tmp_path / "mismatch"
    write_open_clip_folder(folder, vit_bert_config(), tmp_path)
    other = tmp_path / "other"
    write_open_clip_folder(other, text_transformer_config(custom_text=False), tmp_path, seed=1)
    os.replace(other / "open_clip_pytorch_model.bin", folder / "open_clip_pytorch_model.bin")
    assert run_train(synthetic_btmri, tmp_path / "out", "MODEL.BACKBONE.PATH", str(folder)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: OpenCLIP: the weights do not fit the model.") and "Traceback" not in err
    assert f"folder: {folder}" in err and "file:   open_clip_pytorch_model.bin" in err
    assert "missing (" in err and "unexpected (" in err
    assert "open_clip_config.json describes a different architecture" in err
    assert len(err.strip().splitlines()) <= 8


def test_same_layers_other_sizes_name_the_config(tmp_path):
    folder = tmp_path / "sizes"
    write_open_clip_folder(folder, vit_bert_config(), tmp_path)
    config = read_json(str(folder / "open_clip_config.json"))
    config["model_cfg"]["embed_dim"] = 16  # the config now disagrees with the weights' projection sizes
    with open(folder / "open_clip_config.json", "w") as f:
        json.dump(config, f)
    with pytest.raises(UserError, match="size mismatch") as err:
        BACKBONE_REGISTRY.get("OpenCLIP")(cfg_for(folder))
    assert "layer names match but their sizes do not" in str(err.value)


def test_truncated_weights_file_says_so(synthetic_btmri, tmp_path, capsys):
    folder = tmp_path / "truncated"
    write_open_clip_folder(folder, vit_bert_config(), tmp_path)
    path = folder / "open_clip_pytorch_model.bin"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert run_train(synthetic_btmri, tmp_path / "out", "MODEL.BACKBONE.PATH", str(folder)) == 2
    err = capsys.readouterr().err
    assert "the weights file cannot be read" in err and "truncated or interrupted download" in err
    assert f"folder: {folder}" in err and "Traceback" not in err


def test_missing_source_and_folder_without_config_are_named(tmp_path):
    with pytest.raises(UserError, match="MODEL.BACKBONE.HUB"):
        BACKBONE_REGISTRY.get("OpenCLIP")(cfg_for())
    with pytest.raises(UserError, match="has no open_clip_config.json"):
        BACKBONE_REGISTRY.get("OpenCLIP")(cfg_for(tmp_path))


def test_hub_id_offline_without_a_copy_names_the_download_command(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as err:
        BACKBONE_REGISTRY.get("OpenCLIP")(cfg_for(hub_id="hf-hub:example-org/not-here"))
    message = str(err.value)
    assert "tools/download_weights.py hf-hub:example-org/not-here --dir WEIGHTS" in message
    assert "MODEL.BACKBONE.PATH WEIGHTS/example-org--not-here" in message and "TinyOpenCLIP" in message


# ----- tools/download_weights.py with a hub id -----------------------------------------------------
def test_download_a_hub_id_then_load_it_offline(hub, tmp_path, monkeypatch):  # noqa: F811
    source_dir = tmp_path / "source"
    source = write_open_clip_folder(source_dir, vit_bert_config(), tmp_path)
    repo = "/example-org/tiny-clip/resolve/main/"
    hub.add(repo + "open_clip_config.json", (source_dir / "open_clip_config.json").read_bytes())
    hub.add(repo + "open_clip_pytorch_model.bin", (source_dir / "open_clip_pytorch_model.bin").read_bytes(), lfs=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):  # what the HF tokenizer's save_pretrained wrote
        hub.add(repo + name, (source_dir / name).read_bytes())
    hub.add(f"/{FAKE_TEXT_HUB}/resolve/main/config.json", (source_dir / "text" / "config.json").read_bytes())
    weights = tmp_path / "WEIGHTS"
    argv = ["hf-hub:example-org/tiny-clip", "--dir", str(weights), "--hf-endpoint", hub.url, "--quiet"]
    assert download_weights.main(argv) == 0
    folder = weights / "example-org--tiny-clip"
    assert {"open_clip_config.json", "open_clip_pytorch_model.bin", "tokenizer.json", "text"} <= set(os.listdir(folder))
    hits = len(hub.hits)
    assert download_weights.main(argv) == 0
    assert not [h for h in hub.hits[hits:] if not h.endswith(("json", "txt", "model"))]  # weights not fetched again

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    loaded = BACKBONE_REGISTRY.get("OpenCLIP")(cfg_for(weights, hub_id="hf-hub:example-org/tiny-clip"))
    ids = loaded.tokenize(PROMPTS)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(ids), source.encode_text(ids))


# ----- startup cost ------------------------------------------------------------------------------
def test_registering_the_families_imports_no_heavy_library():
    """open_clip, timm, transformers, torchvision and scikit-learn load only when a model or report needs them."""
    heavy = ("open_clip", "timm", "transformers", "torchvision", "sklearn")
    code = f"import sys, backbones, datasets, trainers; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ----- the scripts' folders ----------------------------------------------------------------------
def script_output_dir(model: str, extra_opts: str, cwd) -> str:
    """The --output-dir scripts/coop/few_shot.sh gives seed 1 (PRINT_RUNS=1 lists its command only)."""
    env = {**os.environ, "PYTHON": sys.executable, "SEEDS": "1", "PRINT_RUNS": "1", "EXTRA_OPTS": extra_opts}
    proc = subprocess.run(["bash", os.path.join(REPO, "scripts/coop/few_shot.sh"), str(cwd), "btmri", "2", model],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    words = proc.stdout.split()
    return words[words.index("--output-dir") + 1]


def test_scripts_give_each_model_of_a_generic_family_its_own_folder(tmp_path):
    a = script_output_dir("OpenCLIP", "MODEL.BACKBONE.HUB hf-hub:org/model-a", tmp_path)
    b = script_output_dir("OpenCLIP", "MODEL.BACKBONE.HUB hf-hub:org/model-b MODEL.BACKBONE.PRETRAINED False",
                          tmp_path)
    assert "/CoOp_OpenCLIP-org--model-a/" in a and "/CoOp_OpenCLIP-org--model-b-random/" in b
    # a named family's PATH is only where its weights are: the reference's folder name stays
    assert "/CoOp_BiomedCLIP/" in script_output_dir("BiomedCLIP", "MODEL.BACKBONE.PATH /somewhere/WEIGHTS", tmp_path)
