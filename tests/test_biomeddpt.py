"""BiomedDPT: the L1 constraint and KL term against hand-computed values, and the clinical prompt
learner (learned leading words of the template, clear errors for a template that cannot hold them)."""

import pytest
import torch

from engine.errors import UserError
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
