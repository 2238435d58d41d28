"""The newer backbones as named presets (MedSigLIP, BMC-CLIP, CLIP ViT-L/14): their twins, their own
preprocessing, their offline errors, BMC-CLIP's checkpoint layout, and scripts/backbone_sweep.sh."""

import json
import os
import subprocess
import sys

import pytest
import torch
from script_runs import run_script_in_process

import train
from backbones.clip import read_openai_state_dict
from engine.errors import UserError
from engine.registry import BACKBONE_REGISTRY

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)

# preset -> (twin, image size, mean, patch tokens per image of the twin)
PRESETS = {
    "MedSigLIP": ("TinyMedSigLIP", 448, (0.5, 0.5, 0.5), 49),
    "BMCCLIP": ("TinyBMCCLIP", 224, OPENAI_MEAN, 256),
    "CLIPViTL14": ("TinyCLIPViTL14", 224, OPENAI_MEAN, 256),
}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_each_preset_twin_builds_with_the_presets_preprocessing(preset):
    twin_name, size, mean, patches = PRESETS[preset]
    twin = BACKBONE_REGISTRY.get(twin_name)(None)
    assert twin.image_size == size and tuple(twin.mean) == pytest.approx(mean)
    images = torch.randn(2, 3, size, size)
    with torch.no_grad():
        pooled, tokens = twin.encode_image_tokens(images)
        text = twin.encode_prompts(["a photo of a glioma tumor.", "a brain scan."])
    assert pooled.shape == (2, twin.embed_dim) and tokens.shape == (2, patches, twin.embed_dim)
    assert text.shape == (2, twin.embed_dim)
    # The preset and its twin state the same preprocessing, and train.py feeds the images that way.
    for name in (preset, twin_name):
        cfg = train.setup_cfg(train.parse_args(["--trainer", f"CoOp_{name}", "--config-file",
                                                os.path.join(REPO, "configs/trainers/CoOp/vit_b16.yaml")]))
        assert tuple(cfg.INPUT.SIZE) == (size, size) and tuple(cfg.INPUT.PIXEL_MEAN) == pytest.approx(mean)


def test_command_line_input_options_win_over_a_presets_and_other_models_keep_their_config():
    args = ["--trainer", "CoOp_TinyMedSigLIP", "INPUT.PIXEL_STD", "[0.3,0.3,0.3]"]
    cfg = train.setup_cfg(train.parse_args(args))
    assert tuple(cfg.INPUT.SIZE) == (448, 448) and list(cfg.INPUT.PIXEL_STD) == [0.3, 0.3, 0.3]
    plain = train.setup_cfg(train.parse_args(["--trainer", "CoOp_TinyHFSigLIP"]))
    assert tuple(plain.INPUT.SIZE) == (224, 224)  # no preset: the config's INPUT.* stand


def test_medsiglip_offline_error_says_how_to_get_access_to_the_gated_model():
    cfg = train.setup_cfg(train.parse_args(["--trainer", "CoOp_MedSigLIP"]))
    with pytest.raises(UserError) as err:
        BACKBONE_REGISTRY.get("MedSigLIP")(cfg)
    text = str(err.value)
    for phrase in ("gated", "https://huggingface.co/google/medsiglip-448", "accept its licence", "hf auth login",
                   "hf download google/medsiglip-448 --local-dir WEIGHTS/google--medsiglip-448",
                   "MODEL.BACKBONE.PATH WEIGHTS", "TinyMedSigLIP"):
        assert phrase in text, phrase


@pytest.mark.parametrize("preset", ["BMCCLIP", "CLIPViTL14"])
def test_open_clip_presets_offline_error_names_the_download_command(preset):
    cfg = train.setup_cfg(train.parse_args(["--trainer", f"CoOp_{preset}"]))
    with pytest.raises(UserError, match=f"tools/download_weights.py {preset} --dir WEIGHTS"):
        BACKBONE_REGISTRY.get(preset)(cfg)


def test_bmc_clip_checkpoint_layout_loads_into_its_architecture(tmp_path):
    """BMC_CLIP_CF.pt keeps every weight under 'state_dict' with a 'module.' prefix (DataParallel)."""
    source = BACKBONE_REGISTRY.get("TinyBMCCLIP")(None).model
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn_like(p))  # weights the fresh twin does not have
    path = tmp_path / "BMC_CLIP_CF.pt"
    torch.save({"epoch": 10, "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    state = read_openai_state_dict(str(path), "state_dict_entry")
    target = BACKBONE_REGISTRY.get("TinyBMCCLIP")(None).model
    target.load_state_dict(state)
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))


def test_backbone_sweep_runs_three_methods_per_model_and_tables_them(tmp_path, monkeypatch):
    """backbone_sweep.sh runs zero-shot, the linear probe and BiomedCoOp for each model, each fed its own
    preprocessing (INPUT.SIZE); its runs go in this process, then the script itself runs again: it skips
    the six finished runs and ends with make_tables' rows, one per method and model."""
    from make_synthetic_dataset import write_dataset

    data = str(tmp_path / "data")
    write_dataset(data, "BTMRI", per_class=4, size=32)
    args = [data, "btmri", "1", "TinyMedSigLIP TinyBMCCLIP"]
    opts = "OPTIM.MAX_EPOCH 1 DATALOADER.NUM_WORKERS 0"
    run_script_in_process("scripts/backbone_sweep.sh", args, tmp_path, monkeypatch, opts)
    env = {**os.environ, "PYTHON": sys.executable, "SEEDS": "1", "EXTRA_OPTS": opts}
    proc = subprocess.run(["bash", os.path.join(REPO, "scripts/backbone_sweep.sh"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.count("Skip this job") == 6
    root = tmp_path / "output/backbone_sweep/btmri/shots_1"
    for model, size in (("TinyMedSigLIP", 448), ("TinyBMCCLIP", 224)):
        for method in ("ZeroShot", "LinearProbe", "BiomedCoOp"):
            result = json.load(open(root / f"{method}_{model}" / "nctx4_cscFalse_ctpend/seed1/results.json"))
            assert result["method"] == method and result["backbone"] == model
            assert result["config"]["INPUT.SIZE"] == [size, size]  # each model fed its own preprocessing
    table = proc.stdout
    for method in ("ZeroShot", "LinearProbe", "BiomedCoOp"):
        for model in ("TinyMedSigLIP", "TinyBMCCLIP"):
            assert any(line.split()[:2] == [method, model] for line in table.splitlines()), (method, model)
