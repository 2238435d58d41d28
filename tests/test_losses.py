"""BiomedCoOp's losses and prompt selection against values computed by hand on fixed tensors."""

import math

import pytest
import torch

from trainers.biomedcoop import kdsp_loss, sccm_loss
from trainers.prompt_bank import prompt_scores, select_prompts


def test_sccm_is_element_mean_squared_error():
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mean = torch.tensor([[0.6, 0.8], [1.0, 0.0]])
    # (0.4^2 + 0.8^2 + 1^2 + 1^2) / 4 elements
    assert sccm_loss(text, mean).item() == pytest.approx(0.7)


def test_kdsp_is_teacher_to_student_kl_over_batch_times_classes():
    student = torch.tensor([[0.0, math.log(3.0)]])  # p_s = (1/4, 3/4)
    teacher = torch.tensor([[0.0, 0.0]])  # p_t = (1/2, 1/2)
    kl = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert kdsp_loss(student, teacher).item() == pytest.approx(kl / 2, rel=1e-6)


def test_kdsp_is_zero_when_student_equals_teacher_and_has_no_temperature():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]])
    assert kdsp_loss(logits, logits).item() == pytest.approx(0.0, abs=1e-7)
    # Scaling both by 2 changes the value: no temperature normalises it away.
    assert kdsp_loss(2 * logits, logits).item() > 0


def test_prompt_scores_take_max_over_classes_then_mean_over_images():
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    bank = torch.tensor([
        [[1.0, 0.0], [0.6, 0.8]],  # class 0: prompt 0, prompt 1
        [[0.0, 1.0], [0.8, 0.6]],  # class 1
    ])
    scores = prompt_scores(images, bank, torch.tensor(10.0))
    assert scores.tolist() == pytest.approx([10.0, 8.0])


def test_selection_drops_a_high_outlier():
    # med 3, MAD 1, z = (-2,-1,0,1,97); standardised, only the last exceeds 1.5
    scores = torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0])
    assert select_prompts(scores, 1.5).tolist() == [True, True, True, True, False]


def test_selection_uses_torch_lower_median_and_sample_std():
    # lower median 2, MAD 1, z = (-1,0,1,8): standardised last = 6/sqrt(50/3) = 1.4697
    scores = torch.tensor([1.0, 2.0, 3.0, 10.0])
    assert select_prompts(scores, 1.5).all()
    assert select_prompts(scores, 1.46).tolist() == [True, True, True, False]


def test_zero_mad_gives_a_mask_not_nan():
    # The reference divides by MAD = 0 here and trains on a NaN teacher.
    scores = torch.tensor([1.0, 1.0, 1.0, 5.0])
    assert select_prompts(scores, 1.5).all()  # standardised: (-.5, -.5, -.5, 1.5)
    assert select_prompts(scores, 1.4).tolist() == [True, True, True, False]


def test_identical_scores_keep_every_prompt():
    assert select_prompts(torch.full((50,), 3.0), 1.5).all()


def test_pmcclip_variant_drops_a_prompt_at_the_median():
    # |dev| / MAD = (1,1,1,0,1,1,1): mean 6/7, sample std 1/sqrt(7); the median prompt scores -6/sqrt(7)
    scores = torch.tensor([-10.0, -10.0, -10.0, 0.0, 10.0, 10.0, 10.0])
    assert select_prompts(scores, 1.5).all()
    assert select_prompts(scores, 1.5, absolute=True).tolist() == [True, True, True, False, True, True, True]
    assert select_prompts(scores, 2.3, absolute=True).all()  # 6/sqrt(7) = 2.268
