"""OGKD: the class graph, the smoothed teacher, GAD and LGD against hand computation, patch-token caching,
and the few-shot and base-to-novel scripts on the tiny twin."""

import glob
import json
import math
import os

import pytest
import torch
from script_runs import run_script_in_process

from engine.data import build_transform, transform_spec
from engine.features import FeatureCache
from trainers.ogkd import class_graph, gad_loss, lgd_loss, smoothed_teacher, top_patches

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU = torch.device("cpu")


def log_softmax(row):
    top = max(row)
    lse = top + math.log(sum(math.exp(v - top) for v in row))
    return [v - lse for v in row]


def smooth_by_hand(row, graph, gamma):
    """(1 - gamma) log q_j + gamma sum_i log q_i W_ij for one row of logits."""
    log_q = log_softmax(row)
    n = len(row)
    return [(1 - gamma) * log_q[j] + gamma * sum(log_q[i] * graph[i][j] for i in range(n)) for j in range(n)]


# ----- the class graph and the smoothing on a 3-class example --------------------------------------

def test_class_graph_on_three_classes_matches_hand_computation():
    protos = torch.tensor([[2.0, 0.0], [0.6, 0.8], [0.0, 3.0]])  # unnormalised on purpose
    cos = [[1.0, 0.6, 0.0], [0.6, 1.0, 0.8], [0.0, 0.8, 1.0]]
    alpha = 4.0
    expected = []
    for row in cos:
        z = sum(math.exp(alpha * c) for c in row)
        expected.append([math.exp(alpha * c) / z for c in row])
    graph = class_graph(protos, alpha)
    assert torch.allclose(graph, torch.tensor(expected), atol=1e-6)
    assert torch.allclose(graph.sum(dim=1), torch.ones(3))
    # alpha 0: every class is everyone's neighbour alike.
    assert torch.allclose(class_graph(protos, 0.0), torch.full((3, 3), 1 / 3))


def test_gamma_smoothing_of_the_teacher_on_three_classes():
    graph = class_graph(torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]), 4.0)
    logits = torch.tensor([[3.0, 1.0, -2.0], [0.5, 0.0, 2.5]])
    for gamma in (0.0, 0.3, 1.0):
        got = smoothed_teacher(logits, graph, gamma)
        want = [smooth_by_hand(row, graph.tolist(), gamma) for row in logits.tolist()]
        assert torch.allclose(got, torch.tensor(want), atol=1e-5)
    assert torch.allclose(smoothed_teacher(logits, graph, 0.0), torch.log_softmax(logits, dim=1))
    # A graph with no edges between classes leaves the teacher as it is, whatever gamma.
    assert torch.allclose(smoothed_teacher(logits, torch.eye(3), 0.7), torch.log_softmax(logits, dim=1))
    # Smoothing happens on log-probabilities and is not renormalised (as the authors do).
    assert not torch.allclose(smoothed_teacher(logits, graph, 0.5).exp().sum(dim=1), torch.ones(2))


# ----- GAD and LGD on tiny tensors ---------------------------------------------------------------------

def test_gad_loss_matches_hand_computation():
    graph = class_graph(torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]), 2.0)
    student = torch.tensor([[1.0, 0.0, -1.0], [0.2, 0.4, 0.1]])
    teacher = torch.tensor([[2.0, 1.0, 0.0], [-1.0, 0.5, 1.5]])
    gamma = 0.4
    total = 0.0
    for s_row, t_row in zip(student.tolist(), teacher.tolist()):
        log_p, target = log_softmax(s_row), smooth_by_hand(t_row, graph.tolist(), gamma)
        total += sum(math.exp(t) * (t - p) for t, p in zip(target, log_p))
    expected = total / 6  # B x C
    assert gad_loss(student, teacher, graph, gamma).item() == pytest.approx(expected, rel=1e-5)
    # Only the student carries a gradient.
    s = student.clone().requires_grad_(True)
    t = teacher.clone().requires_grad_(True)
    gad_loss(s, t, graph, gamma).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None


def test_lgd_loss_matches_hand_computation():
    graph = class_graph(torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]]), 4.0)
    student = torch.tensor([[[1.0, 0.0, -1.0], [0.3, 0.3, 0.9]], [[0.0, 2.0, 0.5], [1.5, -0.5, 0.0]]])
    teacher = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 1.0]], [[0.5, 0.5, 3.0], [1.0, 2.0, 0.0]]])
    labels = torch.tensor([0, 2])
    gamma = 0.5
    total = 0.0
    for b, c in enumerate(labels.tolist()):
        for k in range(2):
            p = log_softmax(student[b, k].tolist())[c]
            t = smooth_by_hand(teacher[b, k].tolist(), graph.tolist(), gamma)[c]
            total += math.exp(t) * (t - p)
    expected = total / 4  # B x K
    assert lgd_loss(student, teacher, graph, labels, gamma).item() == pytest.approx(expected, rel=1e-5)


def test_top_patches_keep_the_largest_true_class_magnitudes():
    # 2 images, 5 patches, 2 classes; true classes 1 and 0.
    teacher = torch.tensor([
        [[0.0, 0.1], [0.0, -3.0], [9.0, 0.5], [0.0, 2.0], [0.0, 0.0]],
        [[-4.0, 0.0], [1.0, 9.0], [0.5, 0.0], [3.0, 0.0], [0.0, 0.0]],
    ])
    labels = torch.tensor([1, 0])
    idx = top_patches(teacher, labels, 0.4)  # K = round(5 * 0.4) = 2
    assert [sorted(row) for row in idx.tolist()] == [[1, 3], [0, 3]]
    assert top_patches(teacher, labels, 0.01).shape == (2, 1)  # at least one patch


# ----- patch-token caching -------------------------------------------------------------------------------

def btmri_items(root):
    import train
    from engine.data import DataManager

    args = train.parse_args(["--root", root, "--trainer", "CoOp_TinyBiomedCLIP", "--dataset-config-file",
                             os.path.join(REPO, "configs/datasets/btmri.yaml"), "DATASET.NUM_SHOTS", "1"])
    cfg = train.setup_cfg(args)
    return DataManager(cfg).dataset.train_x, cfg


def test_patch_tokens_are_computed_once_reused_and_never_made_for_global_only_runs(
        synthetic_btmri, tiny_biomedclip, tmp_path):
    items, cfg = btmri_items(synthetic_btmri)
    tfm, spec = build_transform(cfg, True), transform_spec(cfg, True)
    cache_dir = str(tmp_path / "cache")

    # A run that needs no patch tokens: the token method is never called, no patch file appears.
    plain = FeatureCache(cache_dir, tiny_biomedclip, CPU)
    plain.backbone = _Refusing(tiny_biomedclip)
    global_only = plain.get(items, tfm, spec, views=2)
    assert not glob.glob(os.path.join(plain.dir, "*patches*"))

    # Patch tokens: one pass per image view computes both kinds; the global part is the same feature.
    cache = FeatureCache(cache_dir, tiny_biomedclip, CPU)
    jobs = []
    original = cache._compute
    cache._compute = lambda j, *a: (jobs.append(len(j)), original(j, *a))
    feats, patches = cache.get_with_patches(items, tfm, spec, views=2)
    assert jobs == [2 * len(items)]
    patches_per_image = (224 // 32) ** 2  # the twin's ViT: 224 px in 32 px patches
    assert len(patches) == 2 and patches[1].shape == (len(items), patches_per_image, tiny_biomedclip.embed_dim)
    assert torch.allclose(feats, global_only, atol=1e-6)
    assert len(glob.glob(os.path.join(cache.dir, "*patches-v*.pt"))) == 2

    # A fresh cache reads both kinds from disk.
    again = FeatureCache(cache_dir, tiny_biomedclip, CPU)
    again._compute = lambda *a: pytest.fail("patch tokens should have been read from disk")
    feats2, patches2 = again.get_with_patches(items, tfm, spec, views=2)
    assert torch.equal(feats2, feats) and all(torch.equal(patches2[v], patches[v]) for v in (0, 1))

    # The store precision applies to patch tokens too: fp16 on disk, handed out as fp16.
    half = FeatureCache(cache_dir, tiny_biomedclip, CPU, store="fp16")
    _, half_patches = half.get_with_patches(items, tfm, spec, views=1)
    assert half_patches[0].dtype == torch.float16
    assert torch.equal(half_patches[0].float(), patches[0].half().float())


def test_patch_tokens_are_extracted_a_few_views_at_a_time_and_read_one_view_at_a_time(
        synthetic_btmri, tiny_biomedclip, tmp_path, monkeypatch):
    from engine import features

    items, cfg = btmri_items(synthetic_btmri)
    tfm, spec = build_transform(cfg, True), transform_spec(cfg, True)
    monkeypatch.setattr(features, "PATCH_CHUNK", 2 * len(items))  # two views per extraction step
    cache = FeatureCache(str(tmp_path / "cache"), tiny_biomedclip, CPU)
    jobs = []
    original = cache._compute
    cache._compute = lambda j, *a: (jobs.append(len(j)), original(j, *a))
    feats, patches = cache.get_with_patches(items, tfm, spec, views=3)
    assert jobs == [2 * len(items), len(items)]
    assert not [p for p in cache._memory if "patches" in p]  # no patch table kept after extraction
    reference = FeatureCache(str(tmp_path / "other"), tiny_biomedclip, CPU).get_with_patches(items, tfm, spec, 3)
    assert torch.equal(feats, reference[0])
    for v in (2, 0, 1):  # any order; one view in memory at a time
        assert torch.equal(patches[v], reference[1][v]) and patches._loaded == v


class _Refusing(torch.nn.Module):
    """A backbone stand-in whose patch-token method must not be called."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.name = inner.name

    def encode_image(self, images):
        return self.inner.encode_image(images)

    def encode_image_tokens(self, images):
        pytest.fail("a run without patch tokens computed them")


def test_patch_tokens_of_every_vit_family_twin_agree_with_the_global_feature():
    from engine.registry import BACKBONE_REGISTRY

    for name in ("TinyBiomedCLIP", "TinyCLIP", "TinyOpenCLIP", "TinyHFCLIP", "TinyHFSigLIP"):
        backbone = BACKBONE_REGISTRY.get(name)(None).eval()
        images = torch.randn(2, 3, backbone.image_size, backbone.image_size)
        with torch.no_grad():
            pooled, patches = backbone.encode_image_tokens(images)
            assert torch.allclose(pooled, backbone.encode_image(images), atol=1e-5), name
        assert patches.shape[0] == 2 and patches.shape[2] == backbone.embed_dim, name
    with pytest.raises(Exception, match="patch tokens"):
        BACKBONE_REGISTRY.get("TinyPMCCLIP")(None).encode_image_tokens(torch.randn(1, 3, 224, 224))


def test_siglip_patch_token_is_the_pooling_head_seeing_that_token_alone():
    from engine.registry import BACKBONE_REGISTRY

    backbone = BACKBONE_REGISTRY.get("TinyHFSigLIP")(None).eval()
    images = torch.randn(1, 3, backbone.image_size, backbone.image_size)
    vision = backbone.model.vision_model
    with torch.no_grad():
        hidden = vision(pixel_values=images).last_hidden_state
        _, patches = backbone.encode_image_tokens(images)
        for i in (0, 5):
            assert torch.allclose(vision.head(hidden[:, i : i + 1]), patches[:, i], atol=1e-5)


def test_ogkd_on_a_resnet_backbone_needs_lambda_lgd_zero(synthetic_btmri, tmp_path):
    import train
    from engine.trainer import build_trainer

    def args(*extra):
        return train.parse_args([
            "--root", synthetic_btmri, "--seed", "1", "--trainer", "OGKD_TinyPMCCLIP",
            "--dataset-config-file", os.path.join(REPO, "configs/datasets/btmri.yaml"),
            "--config-file", os.path.join(REPO, "configs/trainers/OGKD/few_shot/btmri.yaml"),
            "--output-dir", str(tmp_path), "DATASET.NUM_SHOTS", "1", "DATALOADER.NUM_WORKERS", "0", *extra])

    with pytest.raises(Exception, match="TRAINER.OGKD.LAMBDA_LGD 0"):
        build_trainer(train.setup_cfg(args()))
    trainer = build_trainer(train.setup_cfg(args("TRAINER.OGKD.LAMBDA_LGD", "0.0", "OPTIM.MAX_EPOCH", "1")))
    assert not trainer.needs_patches
    result = trainer.train()
    assert 0 <= result["accuracy"] <= 100


def test_one_ogkd_step_matches_the_losses_computed_the_authors_way(synthetic_btmri, tmp_path):
    """Through the trainer: all P patches scored against the learned text, then the top K kept (the
    authors' order; the trainer scores only the kept ones), with the BTMRI weights."""
    import torch.nn.functional as F

    import train
    from engine.trainer import build_trainer
    from trainers.biomedcoop import sccm_loss
    from trainers.prompt_bank import prompt_scores, select_prompts

    args = train.parse_args([
        "--root", synthetic_btmri, "--seed", "1", "--trainer", "OGKD_TinyBiomedCLIP",
        "--dataset-config-file", os.path.join(REPO, "configs/datasets/btmri.yaml"),
        "--config-file", os.path.join(REPO, "configs/trainers/OGKD/few_shot/btmri.yaml"),
        "--output-dir", str(tmp_path), "DATASET.NUM_SHOTS", "2", "DATALOADER.NUM_WORKERS", "0",
        "OPTIM.MAX_EPOCH", "2"])
    t = build_trainer(train.setup_cfg(args))
    t.set_model_mode("eval")  # no dropout, so the recomputation sees the same network
    t.set_model_mode = lambda *a, **k: None
    batches = t.train_batches()
    t.num_batches, t.batch_idx = len(batches), 0
    batch = next(iter(batches))
    assert batch["patches"].shape[:2] == (4, 49)
    with torch.no_grad():
        image = F.normalize(batch["feat"], dim=-1)
        tokens = F.normalize(batch["patches"], dim=-1)
        text = F.normalize(t.prompt_learner.text_features(), dim=-1)
        scale = t.backbone.logit_scale
        logits = scale * image @ text.t()
        keep = select_prompts(prompt_scores(image, t.prompt_bank, scale), 1.5)
        teacher_text = F.normalize(t.prompt_bank[:, keep].mean(dim=1), dim=-1)
        all_student, all_teacher = scale * tokens @ text.t(), scale * tokens @ teacher_text.t()
        k = round(49 * 0.4)  # BTMRI: TOP_K_RATIO 0.4
        true = all_teacher[torch.arange(4), :, batch["label"]]  # (B, P) teacher logit of the true class
        idx = true.abs().topk(k, dim=1).indices
        pick = idx.unsqueeze(-1).expand(-1, -1, 4)
        expected = (F.cross_entropy(logits, batch["label"]) + 0.5 * sccm_loss(text, t.ensemble_mean)
                    + 1.75 * gad_loss(logits, scale * image @ teacher_text.t(), t.graph, 0.5)
                    + 0.05 * lgd_loss(all_student.gather(1, pick), all_teacher.gather(1, pick), t.graph,
                                      batch["label"], 0.5))
    ctx_before = t.prompt_learner.ctx.detach().clone()
    summary = t.forward_backward(batch)
    assert summary["loss"] == pytest.approx(expected.item(), abs=1e-5)
    assert summary["loss_lgd"] > 0 and not torch.equal(ctx_before, t.prompt_learner.ctx)


# ----- the scripts on the tiny twin ----------------------------------------------------------------------

def test_few_shot_script_trains_with_patch_tokens_and_default_config_without(synthetic_btmri, tmp_path,
                                                                            monkeypatch):
    """few_shot.sh (its runs in this process) trains OGKD with the authors' BTMRI LAMBDA_LGD, the local
    distillation loss logged and one patch-token file cached per training view; with LAMBDA_LGD 0 (the
    default config's value) no patch tokens are computed or stored."""
    cache = tmp_path / "features"
    opts = f"OPTIM.MAX_EPOCH 2 DATALOADER.NUM_WORKERS 0 FEATURES.CACHE_DIR {cache}"
    run_script_in_process("scripts/ogkd/few_shot.sh", [synthetic_btmri, "btmri", "2", "TinyBiomedCLIP"], tmp_path,
                          monkeypatch, opts)
    seed_dir = tmp_path / "output/btmri/shots_2/OGKD_TinyBiomedCLIP/nctx4_cscFalse_ctpend/seed1"
    result = json.load(open(seed_dir / "results.json"))
    assert result["method"] == "OGKD" and result["total"] == 24 and 0 <= result["accuracy"] <= 100
    assert result["config"]["TRAINER.OGKD.LAMBDA_LGD"] == 0.05  # the authors' BTMRI value
    assert (seed_dir / "prompt_learner" / "model.pth.tar-2").exists()
    assert "loss_lgd" in open(seed_dir / "log.txt").read()
    assert len(glob.glob(str(cache / "*" / "*patches-v*.pt"))) == 2  # one file per training view

    # With LAMBDA_LGD 0 (the default config's value) patch tokens are neither computed nor stored.
    lean = tmp_path / "lean"
    run_script_in_process("scripts/ogkd/few_shot.sh", [synthetic_btmri, "btmri", "2", "TinyBiomedCLIP"], tmp_path,
                          monkeypatch, f"OPTIM.MAX_EPOCH 2 DATALOADER.NUM_WORKERS 0 FEATURES.CACHE_DIR {lean} "
                                       "TRAINER.OGKD.LAMBDA_LGD 0.0", OUTPUT_ROOT=str(tmp_path / "out2"))
    assert glob.glob(str(lean / "*" / "train-*.pt")) and not glob.glob(str(lean / "*" / "*patches*"))


def test_base2new_script_trains_on_base_and_tests_new_classes(synthetic_btmri, tmp_path, monkeypatch):
    """base2new.sh (its runs in this process) trains OGKD 50 epochs on the base classes with the authors'
    base-to-novel ALPHA, then tests the new classes eval-only."""
    opts = "DATALOADER.NUM_WORKERS 0 DATASET.NUM_SHOTS 2 FEATURES.TRAIN_VIEWS 2"
    run_script_in_process("scripts/ogkd/base2new.sh", [synthetic_btmri, "btmri", "TinyBiomedCLIP"], tmp_path,
                          monkeypatch, opts)
    sub = "btmri/shots_16/OGKD_TinyBiomedCLIP/nctx4_cscFalse_ctpend/seed1"
    base = json.load(open(tmp_path / "output/base2new/train_base" / sub / "results.json"))
    new = json.load(open(tmp_path / "output/base2new/test_new" / sub / "results.json"))
    assert base["classnames"] == ["glioma tumor", "meningioma tumor"] and base["epochs"] == 50
    assert base["config"]["TRAINER.OGKD.ALPHA"] == 1.0  # the authors' base-to-novel graph sharpness
    assert new["classnames"] == ["pituitary tumor", "normal brain"] and new["eval_only"]
