"""CLIP-Adapter, Tip-Adapter(-F), the linear probe and LP++: formulas by hand, searches on constructed
cases, the Tip-Adapter-F adapter bookkeeping, reload equality, every backbone family, the scripts."""

import json
import math
import os

import pytest
import torch
from script_runs import run_script_in_process
from torch import nn

import train
from engine.errors import UserError
from engine.optim import build_lr_scheduler
from engine.trainer import build_trainer
from trainers.clip_adapter import Adapter, residual_mix
from trainers.feature_methods import one_thread
from trainers.linear_probe import Probe, lpp_init_alpha, lpp_init_weight, lpp_lr_alpha, lpp_lr_w, search_c
from trainers.tip_adapter import TipAdapterF, TipCache, cache_logits, search_beta_alpha, search_grid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHODS = {  # method -> script folder
    "ClipAdapter": "clip_adapter", "TipAdapter": "tip_adapter", "TipAdapterF": "tip_adapter_f",
    "LinearProbe": "linear_probe", "LPPlusPlus": "lp_plus_plus",
}
CHECKPOINT = {  # method -> (registered module, epoch in the file name, learned tensors)
    "ClipAdapter": ("adapter", 20, ["fc.0.weight", "fc.2.weight"]),
    "TipAdapter": ("tip_cache", 1, ["weight", "values", "beta", "alpha"]),
    "TipAdapterF": ("tip_cache", 20, ["weight", "values", "beta", "alpha"]),
    "LinearProbe": ("probe", 1, ["c", "linear.weight", "linear.bias"]),
    "LPPlusPlus": ("lpp_head", 300, ["alpha", "linear.weight", "linear.bias"]),
}


def config_of(method):
    return os.path.join(REPO, "configs", "trainers", method, "few_shot.yaml")


def run_args(root, method, out, model="TinyBiomedCLIP", *extra, seed=1):
    # Two cached views instead of one per epoch keep feature extraction short on CPU.
    return [
        "--root", root, "--seed", str(seed), "--trainer", f"{method}_{model}",
        "--dataset-config-file", os.path.join(REPO, "configs/datasets/btmri.yaml"),
        "--config-file", config_of(method), "--output-dir", str(out),
        "DATASET.NUM_SHOTS", "2", "DATALOADER.NUM_WORKERS", "0", "FEATURES.TRAIN_VIEWS", "2", *extra,
    ]


def make_trainer(root, method, out, model="TinyBiomedCLIP", *extra):
    return build_trainer(train.setup_cfg(train.parse_args(run_args(root, method, out, model, *extra))))


# ----- formulas on fixed tensors ------------------------------------------------------------------------
def test_tip_affinity_and_logits_by_hand():
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    values = torch.eye(2)
    f = torch.tensor([[0.6, 0.8]])
    expected_cache = torch.tensor([[math.exp(-0.8), math.exp(-0.4)]])  # exp(-2 (1 - 0.6)), exp(-2 (1 - 0.8))
    assert torch.allclose(cache_logits(f @ keys.t(), values, 2.0), expected_cache)
    cache = TipCache(2, 2, 2, learn_keys=False)
    with torch.no_grad():
        cache.weight.copy_(keys)
        cache.values.copy_(values)
        cache.beta.fill_(2.0)
        cache.alpha.fill_(3.0)
    assert torch.allclose(cache(f), 3 * expected_cache)
    # the full Tip logits, as the trainer adds them: scale 10 * cos to the text plus the cache
    text = torch.eye(2)
    expected = torch.tensor([[6 + 3 * math.exp(-0.8), 8 + 3 * math.exp(-0.4)]])
    assert torch.allclose(10 * f @ text.t() + cache(f), expected)


def test_tip_search_grid_and_pair_choice():
    grid = search_grid(50.0, 200)
    assert len(grid) == 200 and grid[0] == 0.1 and abs(grid[1] - 0.3495) < 1e-12 and abs(grid[-1] - 49.7505) < 1e-9
    # Sample 0 (label 1) is right only when alpha * (1 - exp(-beta)) > 1; sample 1 (label 0) always is.
    clip = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    affinity = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    labels = torch.tensor([1, 0])
    beta, alpha, acc = search_beta_alpha(affinity, torch.eye(2), clip, labels, [0.5, 1.0, 2.0], [0.5, 1.0, 2.0, 4.0])
    # beta 0.5 needs alpha > 2.54 (so 4); beta 1 with alpha 2 is as good but comes later: the first one stays
    assert (beta, alpha, acc) == (0.5, 4.0, 100.0)
    # nothing ever right: the reference's starting point beta = alpha = 0 is returned
    never = search_beta_alpha(torch.tensor([[1.0, 0.0]]), torch.eye(2), torch.tensor([[10.0, 0.0]]),
                              torch.tensor([1]), [0.5, 1.0], [0.5, 1.0])
    assert never == (0.0, 0.0, 0.0)


def test_c_search_coarse_grid_then_log_halvings():
    calls = []

    def peaked(c):  # val accuracy peaked at log10 C = 0.3
        calls.append(c)
        return -abs(math.log10(c) - 0.3)

    grid = [1e6, 1e4, 1e2, 1.0, 1e-2, 1e-4, 1e-6]
    # by hand: grid peak 1 -> [-1, 1]: right (10), [0, 1]: left (1), [0, .5]: right, [.25, .5]: left,
    # [.25, .375]: left, [.25, .3125]: right, [.28125, .3125]: right, [.296875, .3125]: left
    assert search_c(peaked, grid, 8) == pytest.approx(10**0.296875)
    assert len(calls) == 7 + 16
    assert search_c(lambda c: 1.0, grid, 8) == pytest.approx(1e5)  # ties: first grid value, then the left end
    assert search_c(peaked, grid, 0) == 1.0


@pytest.mark.parametrize("n_classes", [2, 3])
def test_probe_predicts_what_sklearn_predicts(n_classes):
    from sklearn.linear_model import LogisticRegression

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(60, 5, generator=gen)
    y = torch.arange(60) % n_classes
    x[:, 0] += y  # learnable but not separable
    clf = LogisticRegression(C=0.5).fit(x.numpy(), y.numpy())
    probe = Probe(5, n_classes)
    probe.load_sklearn(clf, 0.5)
    test = torch.randn(200, 5, generator=gen)
    with torch.no_grad():
        assert torch.equal(probe(test).argmax(1), torch.as_tensor(clf.predict(test.numpy())))
    assert float(probe.c) == 0.5


def test_lpp_initialisation_and_learning_rates_by_hand():
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    labels = torch.tensor([0, 1, 1])
    text = torch.eye(2)
    # class sums (not means), rounded to half precision: 0.6 -> 1229 / 2048, 1 + 0.8 -> 1 + 1638 / 2048
    assert torch.equal(lpp_init_weight(feats, labels, 2), torch.tensor([[1.0, 0.0], [1229 / 2048, 1 + 1638 / 2048]]))
    # own-class text affinity: class 0 -> 1, class 1 -> (1 + 0.8) / 2 = 0.9; 250 * mean = 237.5
    assert lpp_init_alpha(feats, labels, text, 2) == pytest.approx(237.5)
    # F^T F = [[1.36, .48], [.48, 1.64]] has eigenvalues 2 and 1: 4 * 3 / 2
    assert lpp_lr_w(feats) == pytest.approx(6.0)
    # column sums of squared affinities 1.36 and 1.64: 3 / (4 * 1.64)
    assert lpp_lr_alpha(feats, text) == pytest.approx(3 / 6.56)


def test_lpp_alpha_steps_every_10_epochs_with_a_gradient_that_is_never_zeroed(synthetic_btmri, tmp_path, monkeypatch):
    t = make_trainer(synthetic_btmri, "LPPlusPlus", tmp_path, "TinyBiomedCLIP", "OPTIM.MAX_EPOCH", "25")
    monkeypatch.setattr(t, "accuracy", lambda logits, labels: 0.0)  # every epoch ties: the last one is kept
    views, labels = t.train_views(1)
    alpha0 = lpp_init_alpha(views[0], labels, t.text_weights, t.num_classes)
    lr_alpha = lpp_lr_alpha(views[0], t.text_weights)
    grads = []  # alpha's gradient of each epoch's loss
    t.head.alpha.register_hook(lambda g: grads.append(g.clone()))
    with one_thread():
        t.fit()
    assert len(grads) == 25
    # steps after epochs 10 and 20, each by the gradient summed over every epoch so far
    expected = alpha0 - lr_alpha * (sum(grads[:10]) + sum(grads[:20]))
    assert torch.allclose(t.head.alpha.detach(), expected, rtol=1e-5, atol=1e-5)


def test_clip_adapter_residual_mix_and_per_batch_schedule():
    adapter = Adapter(4, reduction=2)
    with torch.no_grad():
        adapter.fc[0].weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]))
        adapter.fc[2].weight.copy_(torch.tensor([[1.0, 0], [0, 1.0], [2.0, 0], [0, 0]]))
    x = torch.tensor([[1.0, -1.0, 2.0, 0.0]])
    adapted = adapter(x)  # relu(W2 relu(W1 x)) = relu(W2 [1, 0]) = [1, 0, 2, 0]
    assert torch.equal(adapted, torch.tensor([[1.0, 0.0, 2.0, 0.0]]))
    assert torch.allclose(residual_mix(x, adapted, 0.5), torch.tensor([[1.0, -0.5, 2.0, 0.0]]))
    assert torch.allclose(residual_mix(x, adapted, 0.2), torch.tensor([[1.0, -0.8, 2.0, 0.0]]))

    # The config's schedule stepped per batch: 1e-5, then 0.01 * (1 + cos(pi (i - 1) / 20)) / 2, periodic.
    cfg = train.setup_cfg(train.parse_args(["--config-file", config_of("ClipAdapter"), "--trainer", "ClipAdapter"]))
    optim = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.OPTIM.LR)
    sched = build_lr_scheduler(optim, cfg.OPTIM)
    lrs = []
    for _ in range(42):
        lrs.append(optim.param_groups[0]["lr"])
        optim.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-5) and lrs[1] == pytest.approx(0.01)
    assert lrs[2] == pytest.approx(0.005 * (1 + math.cos(math.pi / 20)))
    assert lrs[21] == pytest.approx(0.0, abs=1e-12) and lrs[41] == pytest.approx(0.01)  # back up after 20 more


# ----- Tip-Adapter-F: which adapter is trained and evaluated ------------------------------------------------
def record_adapter_training(monkeypatch):
    calls = []
    original = TipAdapterF.train_adapter

    def recording(self, weight, beta, alpha, keep_best=False):
        calls.append({"param": weight, "start": weight.detach().clone(), "alpha": alpha, "keep_best": keep_best})
        original(self, weight, beta, alpha, keep_best)
        calls[-1]["end"] = weight.detach().clone()

    monkeypatch.setattr(TipAdapterF, "train_adapter", recording)
    return calls


@pytest.mark.parametrize("bug", [False, True])
def test_tip_adapter_f_trains_and_tests_the_selected_adapter(synthetic_btmri, tmp_path, monkeypatch, bug):
    calls = record_adapter_training(monkeypatch)
    t = make_trainer(synthetic_btmri, "TipAdapterF", tmp_path, "TinyBiomedCLIP", "OPTIM.MAX_EPOCH", "2",
                     "TRAINER.TIPADAPTERF.INIT_ALPHA_SCALE", "3",
                     "TRAINER.TIPADAPTERF.REFERENCE_OPTIMIZER_BUG", str(bug))
    with one_thread():  # as train() runs it
        t.fit()
    keys = torch.nn.functional.normalize(t.views[0], dim=-1)
    search = calls[:3]
    assert [c["alpha"] for c in search] == [0, 1, 2] and not any(c["keep_best"] for c in search)
    if not bug:
        # each candidate starts from the keys; the one chosen is trained further and is what gets tested
        assert all(torch.allclose(c["start"], keys) for c in search)
        assert len({id(c["param"]) for c in search}) == 3
        main = calls[3]
        assert main["keep_best"] and any(main["param"] is c["param"] for c in search)
        assert not torch.equal(main["start"], main["end"])
        assert torch.allclose(t.cache.weight, main["end"])
    else:
        # one weight tensor behind every adapter: each search continues from the previous one, and the
        # final training is skipped because the reference's optimiser never sees the selected adapter
        assert len({id(c["param"]) for c in search}) == 1
        assert torch.allclose(search[1]["start"], search[0]["end"]) and torch.allclose(search[2]["start"],
                                                                                       search[1]["end"])
        assert len(calls) == 3 and torch.allclose(t.cache.weight, search[2]["end"])


# ----- reload, backbones, scripts ----------------------------------------------------------------------------
@pytest.mark.parametrize("method", list(METHODS))
def test_checkpoint_holds_what_was_learned_and_reloads_to_the_same_logits(synthetic_btmri, tmp_path, method):
    fitted = make_trainer(synthetic_btmri, method, tmp_path / "fit")
    fitted.train()
    name, epoch, keys = CHECKPOINT[method]
    ckpt = torch.load(tmp_path / "fit" / name / f"model.pth.tar-{epoch}", weights_only=False)
    assert sorted(ckpt["state_dict"]) == sorted(keys) and ckpt["epoch"] == epoch
    feats, _ = fitted.test_features()
    with torch.no_grad():
        before = fitted.model_inference(feats)
        reloaded = make_trainer(synthetic_btmri, method, tmp_path / "eval")
        reloaded.load_model(str(tmp_path / "fit"))
        after = reloaded.model_inference(feats)
    assert torch.allclose(before, after, atol=1e-5)
    if method == "TipAdapter":  # its cache has one key per training image: 1 shot cannot read a 2-shot cache
        other = make_trainer(synthetic_btmri, method, tmp_path / "one_shot", "TinyBiomedCLIP", "DATASET.NUM_SHOTS", "1")
        with pytest.raises(UserError, match="does not fit this run"):
            other.load_model(str(tmp_path / "fit"))


@pytest.mark.parametrize("model", ["TinyCLIP", "TinyPubMedCLIP", "TinyPMCCLIP"])
def test_adapter_and_cache_size_from_the_backbone(synthetic_btmri, tmp_path, model):
    for method in ("ClipAdapter", "TipAdapterF"):
        t = make_trainer(synthetic_btmri, method, tmp_path / method, model, "OPTIM.MAX_EPOCH", "2",
                         "TRAINER.TIPADAPTERF.INIT_ALPHA_SCALE", "2")
        dim = t.backbone.embed_dim
        if method == "ClipAdapter":
            assert t.adapter.fc[0].weight.shape == (dim // 4, dim)
        report = t.train()
        assert report["total"] == 24 and os.path.isfile(tmp_path / method / "results.json")


def test_clip_adapter_base_to_new_tests_the_base_adapter_on_new_classes(synthetic_btmri, tmp_path):
    base = make_trainer(synthetic_btmri, "ClipAdapter", tmp_path / "base", "TinyBiomedCLIP",
                        "OPTIM.MAX_EPOCH", "2", "DATASET.SUBSAMPLE_CLASSES", "base")
    base.train()
    new = make_trainer(synthetic_btmri, "ClipAdapter", tmp_path / "new", "TinyBiomedCLIP",
                       "OPTIM.MAX_EPOCH", "2", "DATASET.SUBSAMPLE_CLASSES", "new")
    new.load_model(str(tmp_path / "base"), epoch=2)
    assert torch.equal(new.adapter.fc[0].weight, base.adapter.fc[0].weight)
    assert new.text_weights.shape[0] == 2 and set(new.classnames).isdisjoint(base.classnames)


def test_each_seed_fits_on_its_own_few_shot_images(synthetic_btmri, tmp_path):
    keys = []
    for seed in (1, 2):
        assert train.main(run_args(synthetic_btmri, "TipAdapter", tmp_path / f"seed{seed}", seed=seed)) == 0
        ckpt = torch.load(tmp_path / f"seed{seed}" / "tip_cache" / "model.pth.tar-1", weights_only=False)
        keys.append(ckpt["state_dict"]["weight"])
    subsets = [json.load(open(os.path.join(synthetic_btmri, "BTMRI", "split_fewshot", f"shot_2-seed_{s}.json")))
               for s in (1, 2)]
    assert subsets[0]["train"] != subsets[1]["train"]
    assert not torch.allclose(keys[0], keys[1])  # the cache of seed 2 holds seed 2's images


@pytest.mark.parametrize("method", list(METHODS))
def test_few_shot_script_end_to_end(synthetic_btmri, tmp_path, monkeypatch, method):
    """Each feature method's few_shot.sh (its runs in this process): trains and tests, the record counting
    the training views it read, the final checkpoint saved under the method's module name."""
    seeds = "1"  # one seed: seeds 1-3 run the same code
    script = f"scripts/{METHODS[method]}/few_shot.sh"
    run_script_in_process(script, [synthetic_btmri, "btmri", "2", "TinyBiomedCLIP"], tmp_path, monkeypatch,
                          "DATALOADER.NUM_WORKERS 0 FEATURES.TRAIN_VIEWS 2", SEEDS=seeds)
    run = tmp_path / "output" / "btmri" / "shots_2" / f"{method}_TinyBiomedCLIP" / "nctx4_cscFalse_ctpend"
    for seed in seeds.split():
        result = json.load(open(run / f"seed{seed}" / "results.json"))
        assert result["method"] == method and result["seed"] == int(seed) and result["total"] == 24
        # views read per training image: one per epoch capped by TRAIN_VIEWS 2, or one pass
        assert result["train_views"] == (2 if method in ("ClipAdapter", "TipAdapterF") else 1)
        log = (run / f"seed{seed}" / "log.txt").read_text()
        assert "Finished training" in log and f"* accuracy: {result['accuracy']:.2f}%" in log
        name, epoch, _ = CHECKPOINT[method]
        assert (run / f"seed{seed}" / name / f"model.pth.tar-{epoch}").is_file()
