"""BiomedDPT: the L1 constraint and KL term against hand-computed values, the clinical prompt
learner (learned leading words of the template, clear errors for a template that cannot hold them), and
training on cached features of the zero-prompted image tower exactly as on pixels of the same view."""

import glob
import json
import math
import os

import pytest
import torch
from script_runs import run_script_in_process

import train
from engine.errors import UserError
from engine.registry import BACKBONE_REGISTRY
from engine.trainer import build_trainer
from engine.utils import set_random_seed
from trainers.biomedcoop import kdsp_loss
from trainers.biomeddpt import ClinicalPromptLearner, semantic_l1_loss


def test_semantic_l1_is_the_element_mean_absolute_difference():
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    teacher = torch.tensor([[0.0, 1.0], [0.8, 0.6]])
    # |1| + |-1| + |-0.2| + |0.2| over 4 elements
    assert semantic_l1_loss(text, teacher).item() == pytest.approx(2.4 / 4)


def test_kl_term_is_kl_of_the_zero_shot_to_the_learned_softmax_over_b_times_c():
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[0.0, 1.0]])
    e = torch.e
    p = torch.tensor([1 / (1 + e), e / (1 + e)])  # teacher softmax; student's is (0.5, 0.5)
    expected = float((p * (p / 0.5).log()).sum()) / 2  # KL(teacher || student) summed, / (B x C) = 2
    assert kdsp_loss(student, teacher).item() == pytest.approx(expected, rel=1e-6)


def test_clinical_prompt_starts_as_the_template_and_learns_its_leading_words(tiny_biomedclip):
    names = ["glioma_tumor", "normal brain"]
    template = "a MR photo of a {} in the brain."
    learner = ClinicalPromptLearner(tiny_biomedclip, names, template, ctx_init="a MR photo of a")
    words = int(tiny_biomedclip.real_lengths(tiny_biomedclip.tokenize(["a MR photo of a"]))[0]) - 2  # [CLS] .. [SEP]
    assert learner.n_ctx == words >= 5 and learner.ctx.shape == (words, tiny_biomedclip.token_width)
    ids = tiny_biomedclip.trim(tiny_biomedclip.tokenize([template.format(n.replace("_", " ")) for n in names]))
    assert torch.equal(learner.token_ids, ids)
    with torch.no_grad():
        assert torch.equal(learner(), tiny_biomedclip.embed_tokens(ids))  # the template itself at the start
        frozen = tiny_biomedclip.encode_text(ids)
        torch.testing.assert_close(learner.text_features(), frozen)
    assert [n for n, _ in learner.named_parameters()] == ["ctx"] and list(learner.state_dict()) == ["ctx"]


def test_clinical_prompt_errors_name_the_key_and_the_fix(tiny_biomedclip):
    with pytest.raises(UserError, match="must begin with the words of CTX_INIT"):
        ClinicalPromptLearner(tiny_biomedclip, ["glioma"], "a CT photo of a {}.", ctx_init="a MR photo of a")
    with pytest.raises(UserError, match="N_CTX 4 is more than the 2 token"):
        ClinicalPromptLearner(tiny_biomedclip, ["glioma"], "a photo {} of the brain.", n_ctx=4)
    torch.manual_seed(0)
    random = ClinicalPromptLearner(tiny_biomedclip, ["glioma"], "a MR photo of a {}.", n_ctx=4)
    assert random.ctx.std().item() == pytest.approx(0.02, rel=0.3)


# ----- the trainer on the tiny twins ---------------------------------------------------------------------
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs/trainers/BiomedDPT/few_shot/btmri.yaml")


def make_trainer(root, model, out, extra=()):
    args = train.parse_args([
        "--root", root, "--seed", "1", "--trainer", f"BiomedDPT_{model}",
        "--dataset-config-file", os.path.join(REPO, "configs/datasets/btmri.yaml"),
        "--config-file", CONFIG, "--output-dir", str(out),
        "DATASET.NUM_SHOTS", "4", "DATALOADER.NUM_WORKERS", "0", *extra,
    ])
    set_random_seed(1)
    trainer = build_trainer(train.setup_cfg(args))
    trainer.epoch, trainer.batch_idx = 0, 0
    return trainer


def one_step(trainer) -> dict:
    loader = trainer.train_batches()
    trainer.num_batches = len(loader)
    trainer.set_model_mode("train")
    return trainer.forward_backward(next(iter(loader)))


@pytest.mark.parametrize("model", ["TinyBiomedCLIP", "TinyHFCLIP"])
def test_zero_visual_prompts_reweight_attention_and_one_step_moves_only_the_context(synthetic_btmri, tmp_path, model):
    trainer = make_trainer(synthetic_btmri, model, tmp_path)
    frozen = BACKBONE_REGISTRY.get(model)().eval()
    images = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    trainer.set_model_mode("eval")
    with torch.no_grad():
        plain = frozen.encode_image(images)
        prompted = trainer.image_features({"img": images})
        # the text side starts as the clinical template itself
        start = frozen.encode_text(trainer.prompt_learner.token_ids)
        torch.testing.assert_close(trainer.prompt_learner.text_features(), start)
    # zero tokens carry no content but take a share of every softmax: the image features change
    assert prompted.shape == plain.shape and not torch.allclose(prompted, plain, atol=1e-4)
    assert not trainer.visual.tokens.any() and not trainer.visual.tokens.requires_grad

    before = {k: v.detach().clone() for k, v in trainer.backbone.state_dict().items()}
    ctx = trainer.prompt_learner.ctx.detach().clone()
    summary = one_step(trainer)
    assert all(math.isfinite(summary[k]) for k in ("loss", "loss_ce", "loss_l1", "loss_kl"))
    assert summary["loss_l1"] > 0 and summary["loss_kl"] >= 0
    after = trainer.backbone.state_dict()
    assert [k for k in before if not torch.equal(before[k], after[k])] == []
    assert not torch.equal(ctx, trainer.prompt_learner.ctx)
    assert not trainer.visual.tokens.any()
    assert list(trainer._models) == ["prompt_learner"]


def test_learned_visual_prompts_start_at_zero_and_train(synthetic_btmri, tmp_path):
    trainer = make_trainer(synthetic_btmri, "TinyBiomedCLIP", tmp_path, ["TRAINER.BIOMEDDPT.VISUAL_LEARNED", "True"])
    assert list(trainer._models) == ["prompt_learner", "visual_prompts"]
    assert not trainer.use_feature_cache and trainer.feature_cache.variant is None  # learned prompts: pixels
    depth = trainer.backbone.tower_layers("image").depth
    assert trainer.visual.tokens.shape == (depth, 4, trainer.backbone.tower_layers("image").width)
    assert not trainer.visual.tokens.any() and trainer.visual.tokens.requires_grad
    one_step(trainer)
    assert trainer.visual.tokens.any()


def test_torchrun_is_refused_on_cached_features_and_allowed_with_learned_visual_prompts(synthetic_btmri, tmp_path,
                                                                                         monkeypatch):
    from engine import distributed
    from trainers.biomeddpt import BiomedDPT

    def cfg(*opts):
        return train.setup_cfg(train.parse_args([
            "--root", synthetic_btmri, "--trainer", "BiomedDPT_TinyBiomedCLIP", "--config-file", CONFIG,
            "--dataset-config-file", os.path.join(REPO, "configs/datasets/btmri.yaml"),
            "--output-dir", str(tmp_path), *opts]))

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="BiomedDPT trains on cached image features"):
        distributed.check_method(BiomedDPT, cfg(), "BiomedDPT")
    distributed.check_method(BiomedDPT, cfg("TRAINER.BIOMEDDPT.VISUAL_LEARNED", "True"), "BiomedDPT")
    distributed.check_method(BiomedDPT, cfg("FEATURES.ENABLED", "False"), "BiomedDPT")
    # a sweep's --gpus-per-job follows the same rule
    from sweeps.launch import train_command

    argv = ["python", "train.py", "--root", synthetic_btmri, "--trainer", "BiomedDPT_TinyBiomedCLIP", "--config-file",
            CONFIG, "--dataset-config-file", os.path.join(REPO, "configs/datasets/btmri.yaml"), "--output-dir",
            str(tmp_path)]
    assert train_command(argv, 2) == argv
    learned = [*argv, "TRAINER.BIOMEDDPT.VISUAL_LEARNED", "True"]
    assert train_command(learned, 2)[1:3] == ["-m", "torch.distributed.run"]


def test_pmcclip_refuses_in_one_line(synthetic_btmri, tmp_path):
    with pytest.raises(UserError) as err:
        make_trainer(synthetic_btmri, "TinyPMCCLIP", tmp_path)
    assert "\n" not in str(err.value) and "BiomedDPT needs deep prompts" in str(err.value)


def test_checkpoint_holds_only_the_context_and_reloads_to_the_same_accuracy(synthetic_btmri, tmp_path):
    out = tmp_path / "run"
    common = ["--root", synthetic_btmri, "--seed", "1", "--trainer", "BiomedDPT_TinyBiomedCLIP",
              "--dataset-config-file", os.path.join(REPO, "configs/datasets/btmri.yaml"), "--config-file", CONFIG]
    opts = ["DATASET.NUM_SHOTS", "4", "DATALOADER.NUM_WORKERS", "0", "OPTIM.MAX_EPOCH", "2"]
    assert train.main([*common, "--output-dir", str(out), *opts]) == 0
    trained = json.load(open(out / "results.json"))
    assert list(torch.load(out / "prompt_learner" / "model.pth.tar-2", weights_only=False)["state_dict"]) == ["ctx"]
    assert train.main([*common, "--output-dir", str(tmp_path / "eval"), "--model-dir", str(out), "--eval-only",
                       *opts]) == 0
    again = json.load(open(tmp_path / "eval" / "results.json"))
    assert again["accuracy"] == trained["accuracy"] and again["per_class_accuracy"] == trained["per_class_accuracy"]
    # trained and tested on cached features of the zero-prompted tower: one view per epoch
    assert len(glob.glob(os.path.join(synthetic_btmri, "**", "feature_cache", "**", "train-*-dpt-v1.pt"),
                         recursive=True)) >= 1
    assert "image tower is released" in open(out / "log.txt").read()


def run_script(script, args, cwd, monkeypatch):
    opts = "OPTIM.MAX_EPOCH 1 DATALOADER.NUM_WORKERS 0 TRAINER.BIOMEDDPT.N_PROMPTS 5"
    run_script_in_process(f"scripts/biomeddpt/{script}", args, cwd, monkeypatch, opts)


def test_scripts_run_few_shot_and_base_to_novel(synthetic_btmri, tmp_path, monkeypatch):
    run_script("few_shot.sh", [synthetic_btmri, "btmri", "2", "TinyBiomedCLIP"], tmp_path, monkeypatch)
    result = json.load(open(tmp_path / "output/btmri/shots_2/BiomedDPT_TinyBiomedCLIP/nctx4_cscFalse_ctpend/seed1"
                            / "results.json"))
    assert result["method"] == "BiomedDPT" and result["total"] == 24 and 0 <= result["accuracy"] <= 100
    assert result["config"]["TRAINER.BIOMEDDPT.TEMPLATE"] == "a MR photo of a {} in the brain."
    run_script("base2new.sh", [synthetic_btmri, "btmri", "TinyBiomedCLIP"], tmp_path, monkeypatch)
    sub = "btmri/shots_16/BiomedDPT_TinyBiomedCLIP/nctx4_cscFalse_ctpend/seed1"
    new = json.load(open(tmp_path / "output/base2new/test_new" / sub / "results.json"))
    assert new["classnames"] == ["pituitary tumor", "normal brain"] and new["eval_only"]



# ----- cached features of the zero-prompted tower (VISUAL_LEARNED False) -----------------------------------
def view_pixels(trainer, items, view: int) -> torch.Tensor:
    """The training crops of `items` in `view`, drawn with the seeds the feature cache uses."""
    from engine.data import transform_spec
    from engine.features import _ViewDataset

    spec = transform_spec(trainer.cfg, True)
    views = _ViewDataset([(d, view) for d in items], trainer.dm.tfm_train, spec.get("view_salt") or True)
    return torch.stack([views[i] for i in range(len(items))])


def plain_cache_first(trainer, items) -> torch.Tensor:
    """Fill the same cache folder with the plain tower's features of the same views first (what a cache key
    that ignored the prompts would hand BiomedDPT), and return them."""
    from engine.data import transform_spec
    from engine.features import FeatureCache

    cache = FeatureCache(os.path.dirname(trainer.feature_cache.dir), trainer.backbone, trainer.device)
    return cache.get(items, trainer.dm.tfm_train, transform_spec(trainer.cfg, True), views=2)


def test_cached_features_are_the_prompted_towers_on_the_same_view(synthetic_btmri, tmp_path):
    cache_dir = ["FEATURES.CACHE_DIR", str(tmp_path / "cache"), "OPTIM.MAX_EPOCH", "2"]
    trainer = make_trainer(synthetic_btmri, "TinyBiomedCLIP", tmp_path / "run", cache_dir)
    assert trainer.use_feature_cache and trainer.feature_cache.variant.key == {
        "zero_visual_prompts": 4, "layers": "every image block"}
    items = trainer.dm.dataset.train_x
    plain = plain_cache_first(trainer, items)
    cached = trainer.train_batches().feats  # (views, N, D), one view per epoch
    assert cached.shape == plain.shape == (2, len(items), plain.shape[-1])
    trainer.set_model_mode("eval")
    for view in range(2):
        pixels = view_pixels(trainer, items, view)
        with torch.no_grad():
            hooked = trainer.image_features({"img": pixels})  # the pixel path: the prompted tower
            tower = trainer.backbone.encode_image(pixels)
        torch.testing.assert_close(plain[view], tower, rtol=1e-5, atol=1e-6)  # the plain cache is the plain tower
        torch.testing.assert_close(cached[view], hooked, rtol=1e-5, atol=1e-6)
        assert (cached[view] - plain[view]).abs().max() > 1e-3  # the zero prompts change the features
    files = os.listdir(trainer.feature_cache.dir)  # the plain tower's files and BiomedDPT's, side by side
    assert len([f for f in files if f.endswith("-dpt-v0.pt")]) == 1
    assert len([f for f in files if f.endswith("-v0.pt") and "-dpt-" not in f]) == 1


def test_a_cached_step_moves_the_context_as_the_pixel_step_on_the_same_view(synthetic_btmri, tmp_path):
    from engine.data import transform_spec

    opts = ["FEATURES.CACHE_DIR", str(tmp_path / "cache")]
    cached = make_trainer(synthetic_btmri, "TinyBiomedCLIP", tmp_path / "a", opts)
    pixels = make_trainer(synthetic_btmri, "TinyBiomedCLIP", tmp_path / "b", opts)
    ctx = cached.prompt_learner.ctx.detach().clone()
    assert torch.equal(ctx, pixels.prompt_learner.ctx)
    items = cached.dm.dataset.train_x[:4]
    labels = torch.tensor([d.label for d in items])
    plain = plain_cache_first(cached, items)[0]
    feats = cached.feature_cache.get(items, cached.dm.tfm_train, transform_spec(cached.cfg, True))[0]
    images = view_pixels(cached, items, 0)

    def step(trainer, batch):
        trainer.set_model_mode("train")
        trainer.num_batches = 2  # mid-epoch: no LR step
        torch.manual_seed(0)  # the text tower's dropout draws the same masks in both
        summary = trainer.forward_backward({**batch, "label": labels})
        return summary, trainer.prompt_learner.ctx.detach() - ctx

    got, moved = step(cached, {"feat": feats})
    want, expected = step(pixels, {"img": images})
    assert expected.abs().max() > 0
    for key in ("loss", "loss_ce", "loss_l1", "loss_kl"):
        assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-7)
    torch.testing.assert_close(moved, expected, rtol=1e-4, atol=1e-9)
    # the plain tower's features move it measurably differently: the tolerance above tells them apart
    other = make_trainer(synthetic_btmri, "TinyBiomedCLIP", tmp_path / "c", opts)
    _, wrong = step(other, {"feat": plain})
    assert not torch.allclose(wrong, expected, rtol=1e-4, atol=1e-9)
