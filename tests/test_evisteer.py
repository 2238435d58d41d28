"""EviSteer: the evidential gates, Dempster-Shafer fusion and KL regulariser against hand-computed
values; the steering modules' shapes, zero start and parameter count."""

import math

import pytest
import torch

from trainers.evisteer import (
    ImageSteer,
    TextSteer,
    dempster_shafer_confidence,
    evidential_alpha,
    evisteer_kl,
    gamma_kl_to_unit_prior,
)

EULER = 0.5772156649015329


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_evidential_alpha_is_softplus_of_the_squared_code_plus_one():
    got = evidential_alpha(torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64))
    expected = [softplus(0.0) + 1 + 1e-6, softplus(1.0) + 1 + 1e-6, softplus(4.0) + 1 + 1e-6]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))
    assert (got > 1).all()


def test_dempster_shafer_fusion_by_hand():
    u_text = torch.tensor([0.5, 0.0, 1.0, 0.25], dtype=torch.float64)
    u_image = torch.tensor([0.5, 0.3, 0.3, 0.6], dtype=torch.float64)
    got = dempster_shafer_confidence(u_text, u_image)
    # equal ignorance 0.5: masses 0.25 on 'update', conflict 0.5 -> 0.25 / 0.5
    # a certain text (u_t = 0) leaves the image's own belief renormalised to ~1
    # a text with no evidence (u_t = 1) vetoes the update
    # u_t 0.25, u_v 0.6: 0.75 * 0.4 / (1 - (0.75 * 0.6 + 0.25 * 0.4))
    expected = [0.25 / (0.5 + 1e-6), 0.7 / (0.7 + 1e-6), 0.0, 0.3 / (1 - 0.55 + 1e-6)]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64))
    # broadcasting as the image gate uses it: u_text (r,), u_image (B, N, r)
    assert dempster_shafer_confidence(torch.rand(4), torch.rand(2, 5, 4)).shape == (2, 5, 4)


def test_gamma_kl_to_the_unit_prior_by_hand():
    # alpha 1: 0 - lgamma(1) = 0; alpha 2: digamma(2) - lgamma(2) = 1 - gamma; alpha 3: 2 (1.5 - gamma) - ln 2
    kl2, kl3 = 1 - EULER, 2 * (1.5 - EULER) - math.log(2)
    assert gamma_kl_to_unit_prior(torch.tensor([1.0])).item() == pytest.approx(0.0, abs=1e-7)
    assert gamma_kl_to_unit_prior(torch.tensor([2.0, 3.0])).item() == pytest.approx((kl2 + kl3) / 2, rel=1e-6)
    # image term: mean over blocks of element means; text term likewise; summed
    got = evisteer_kl([torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 3.0]])], [torch.tensor([[2.0]])])
    assert got.item() == pytest.approx(((0 + kl2) / 2 + kl3) / 2 + kl2, rel=1e-6)
    assert gamma_kl_to_unit_prior(torch.tensor([1.5], dtype=torch.bfloat16)).dtype == torch.float32


def _set(module, down, up, gate, global_gate=0.0):
    with torch.no_grad():
        module.down.weight.copy_(torch.tensor(down, dtype=torch.float64))
        module.up.weight.copy_(torch.tensor(up, dtype=torch.float64))
        module.gate.weight.copy_(torch.tensor(gate, dtype=torch.float64))
        module.global_gate.fill_(global_gate)


def test_text_and_image_steering_by_hand():
    text = TextSteer(2, 1).double()
    _set(text, [[1.0, 0.0], [0.0, 1.0]], [[1.0], [2.0]], [[3.0]])
    tokens = torch.tensor([[[3.0, 0.0], [1.0, 1.0]], [[0.0, 2.0], [5.0, 5.0]]], dtype=torch.float64)  # (C 2, T 2, w 2)
    update, alpha = text(tokens, pooled=torch.tensor([0, 1]))
    a = softplus(0.0) + 1 + 1e-6  # z_unc 0 for the first token of prompt 0
    gate = sigmoid(3 * (1 - 1 / a))
    torch.testing.assert_close(update[0, 0], torch.tensor([3.0, 6.0], dtype=torch.float64) * 0.5 * gate)
    # the pooled token: position 0 of prompt 0, position 1 of prompt 1 (z_unc 5)
    torch.testing.assert_close(alpha, torch.tensor([[a], [softplus(25.0) + 1 + 1e-6]], dtype=torch.float64))

    image = ImageSteer(2, 1).double()
    _set(image, [[1.0, 0.0], [0.0, 1.0]], [[1.0], [2.0]], [[2.0]], global_gate=1.0)
    text_alpha = torch.tensor([[2.0], [4.0]], dtype=torch.float64)
    update, alpha = image(torch.tensor([[[3.0, 0.0]]], dtype=torch.float64), text_alpha)
    u_t, u_v = (0.5 + 0.25) / 2, 1 / a
    fused = (1 - u_t) * (1 - u_v) / (1 - ((1 - u_t) * u_v + u_t * (1 - u_v)) + 1e-6)
    expected = sigmoid(1.0) * sigmoid(2 * fused) * torch.tensor([3.0, 6.0], dtype=torch.float64)
    torch.testing.assert_close(update[0, 0], expected)
    assert alpha.shape == (1, 1, 1)


def test_modules_start_with_a_zero_update_and_count_3_w_r_plus_r_plus_1_values():
    torch.manual_seed(0)
    text, image = TextSteer(768, 4), ImageSteer(768, 4)
    assert sum(p.numel() for p in text.parameters()) == 3 * 768 * 4 + 4 + 1 == 9221
    tokens = torch.randn(3, 7, 768)
    update, alpha = text(tokens, torch.zeros(3, dtype=torch.long))
    assert not update.any() and alpha.shape == (3, 4)
    update, alpha = image(torch.randn(2, 5, 768), alpha)
    assert not update.any() and alpha.shape == (2, 5, 4)
    # the first step's gradient reaches `up` (and through u_t the text's down projection later)
    update.sum().backward()
    assert image.up.weight.grad.abs().sum() > 0
