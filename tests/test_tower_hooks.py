"""The tower hook contract (backbones/tower_hooks.py) on every family's tiny twin: zero steering and no
prompts give the frozen outputs bit for bit, inserted tokens (even zeros) change attention, prompts sit
where the contract says at each block's input, gradients reach prompts and steering modules, and a
ResNet image tower refuses in one line."""

import pytest
import torch
from torch import nn

from backbones.tower_hooks import TowerHooks, require
from engine.errors import UserError
from engine.registry import BACKBONE_REGISTRY

VIT_TWINS = ("TinyBiomedCLIP", "TinyCLIP", "TinyPubMedCLIP", "TinyOpenCLIP", "TinyHFCLIP", "TinyHFSigLIP")
TEXT_TWINS = (*VIT_TWINS, "TinyPMCCLIP")
PROMPTS = ["a photo of a glioma tumor.", "no tumor.", "a scan"]


@pytest.fixture(scope="module")
def twins():
    built = {}

    def get(name):
        if name not in built:
            built[name] = BACKBONE_REGISTRY.get(name)().eval()
        return built[name]

    return get


class Zero(nn.Module):
    """A steering module whose update is zero; counts its calls and checks the layout it is given."""

    def __init__(self, width):
        super().__init__()
        self.width, self.calls = width, 0

    def forward(self, tokens):
        assert tokens.dim() == 3 and tokens.shape[-1] == self.width  # batch-first (batch, length, width)
        self.calls += 1
        return torch.zeros_like(tokens)


class Shift(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.bias = nn.Parameter(torch.full((width,), 0.5))

    def forward(self, tokens):
        return self.bias.expand_as(tokens)


def images(size, n=2):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def text_inputs(backbone):
    ids = backbone.trim(backbone.tokenize(PROMPTS))
    return backbone.embed_tokens(ids), ids


@pytest.mark.parametrize("name", VIT_TWINS)
@torch.no_grad()
def test_image_tower_zero_steering_is_the_frozen_model(twins, name):
    backbone = twins(name)
    layers = backbone.tower_layers("image")
    steer = {i: Zero(layers.width) for i in range(layers.depth)}
    x = images(backbone.image_size)
    assert torch.equal(backbone.encode_image_hooked(x, TowerHooks(steer=steer)), backbone.encode_image(x))
    assert all(m.calls == 1 for m in steer.values())
    # the hooks are gone afterwards: a plain call is untouched
    assert torch.equal(backbone.encode_image(x), backbone.encode_image(x))
    assert all(m.calls == 1 for m in steer.values())


@pytest.mark.parametrize("name", TEXT_TWINS)
@torch.no_grad()
def test_text_tower_zero_steering_is_the_frozen_model(twins, name):
    backbone = twins(name)
    layers = backbone.tower_layers("text")
    assert layers.width == backbone.token_width
    steer = {i: Zero(layers.width) for i in range(layers.depth)}
    embeds, ids = text_inputs(backbone)
    got = backbone.encode_text_hooked(embeds, ids, TowerHooks(steer=steer))
    assert torch.equal(got, backbone.encode_text_embeddings(embeds, ids))
    assert all(m.calls == 1 for m in steer.values())
    # and the spliced path is the model's own text encoding
    torch.testing.assert_close(got, backbone.encode_text(ids), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", VIT_TWINS)
@torch.no_grad()
def test_zero_image_prompts_change_attention_and_are_removed_before_pooling(twins, name):
    backbone = twins(name)
    layers = backbone.tower_layers("image")
    x = images(backbone.image_size)
    zeros = torch.zeros(2, layers.width)
    seen = {}
    last = layers.blocks[-1]
    handle = last.register_forward_hook(lambda m, a, out: seen.setdefault("out", out))
    try:
        prompted = backbone.encode_image_hooked(x, TowerHooks(prompts={0: zeros}))
    finally:
        handle.remove()
    frozen = backbone.encode_image(x)
    assert prompted.shape == frozen.shape
    assert not torch.allclose(prompted, frozen)
    out = seen["out"] if isinstance(seen["out"], torch.Tensor) else seen["out"][0]
    plain = {}
    handle = last.register_forward_hook(lambda m, a, out: plain.setdefault("out", out))
    try:
        backbone.encode_image(x)
    finally:
        handle.remove()
    plain_out = plain["out"] if isinstance(plain["out"], torch.Tensor) else plain["out"][0]
    assert out.shape == plain_out.shape  # the two prompt tokens were dropped after the last block


@pytest.mark.parametrize("name", VIT_TWINS)
@torch.no_grad()
def test_image_prompts_replace_the_appended_tokens_at_deeper_layers(twins, name):
    backbone = twins(name)
    layers = backbone.tower_layers("image")
    x = images(backbone.image_size)
    p0, p1 = torch.randn(3, layers.width), torch.randn(3, layers.width)
    seen = {}

    def record(module, args, kwargs):
        hidden = args[0] if args else next(v for v in kwargs.values() if isinstance(v, torch.Tensor))
        seen["in"] = hidden if layers.batch_first else hidden.transpose(0, 1)

    handle = layers.blocks[1].register_forward_pre_hook(record, with_kwargs=True)
    try:
        backbone.encode_image_hooked(x, TowerHooks(prompts={0: p0, 1: p1}))
    finally:
        handle.remove()
    tokens = seen["in"]
    assert torch.equal(tokens[:, -3:], p1.expand(2, -1, -1))


@pytest.mark.parametrize("name", TEXT_TWINS)
@torch.no_grad()
def test_zero_text_prompts_change_the_features_and_fit_the_masks(twins, name):
    backbone = twins(name)
    embeds, ids = text_inputs(backbone)
    zeros = torch.zeros(2, backbone.token_width)
    frozen = backbone.encode_text_embeddings(embeds, ids)
    prompted = backbone.encode_text_hooked(embeds, ids, TowerHooks(prompts={0: zeros}))
    assert prompted.shape == frozen.shape and torch.isfinite(prompted).all()
    assert not torch.allclose(prompted, frozen)
    # the inserted slots count as real tokens: real lengths grow by 2 (BERT masks, end positions)
    new_embeds, new_ids = backbone.insert_text_slots(embeds, ids, zeros)
    start = backbone.start_tokens
    assert torch.equal(new_embeds[:, start : start + 2], zeros.expand(3, -1, -1))
    if new_ids.shape[1] == ids.shape[1] + 2:
        assert torch.equal(backbone.real_lengths(new_ids), backbone.real_lengths(ids) + 2)
    else:  # a tower that keeps full-length rows (SigLIP) gives up trailing padding instead
        assert new_ids.shape[1] == backbone.context_length
    # inserting at layer 0 then is the same as splicing the slots and replacing nothing
    same = backbone.encode_text_hooked(new_embeds, new_ids, TowerHooks(context_slots=True, steer={}))
    assert torch.equal(same, prompted)


@pytest.mark.parametrize("name", ("TinyBiomedCLIP", "TinyCLIP", "TinyHFCLIP", "TinyPMCCLIP"))
@torch.no_grad()
def test_text_prompts_replace_the_context_slots_at_deeper_layers(twins, name):
    backbone = twins(name)
    layers = backbone.tower_layers("text")
    embeds, ids = text_inputs(backbone)
    p1 = torch.randn(3, 2, backbone.token_width)  # one set per prompt row
    seen = {}

    def record(module, args, kwargs):
        hidden = args[0] if args else next(v for v in kwargs.values() if isinstance(v, torch.Tensor))
        seen["in"] = hidden if layers.batch_first else hidden.transpose(0, 1)

    handle = layers.blocks[1].register_forward_pre_hook(record, with_kwargs=True)
    try:
        out = backbone.encode_text_hooked(embeds, ids, TowerHooks(prompts={1: p1}, context_slots=True))
    finally:
        handle.remove()
    start = backbone.start_tokens
    assert seen["in"].shape[1] == ids.shape[1]
    assert torch.equal(seen["in"][:, start : start + 2], p1)
    assert not torch.allclose(out, backbone.encode_text_embeddings(embeds, ids))


@pytest.mark.parametrize("name", ("TinyBiomedCLIP", "TinyCLIP", "TinyHFSigLIP"))
def test_gradients_reach_prompts_and_steering(twins, name):
    backbone = twins(name).requires_grad_(False)  # frozen, as every method keeps it
    image_width = backbone.tower_layers("image").width
    prompt = nn.Parameter(torch.zeros(2, image_width))
    shift = Shift(image_width)
    text_prompt = nn.Parameter(torch.zeros(2, backbone.token_width))
    text_shift = Shift(backbone.token_width)
    embeds, ids = text_inputs(backbone)
    image = backbone.encode_image_hooked(images(backbone.image_size), TowerHooks(prompts={0: prompt}, steer={0: shift}))
    text = backbone.encode_text_hooked(embeds, ids, TowerHooks(prompts={0: text_prompt}, steer={1: text_shift}))
    (image.sum() + text.sum()).backward()
    for p in (prompt, shift.bias, text_prompt, text_shift.bias):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_a_resnet_image_tower_refuses_in_one_line_and_its_text_tower_still_works(twins):
    backbone = twins("TinyPMCCLIP")
    with pytest.raises(UserError) as err:
        require(backbone, "MaPLe", {"text": "deep prompts", "image": "deep prompts"})
    message = str(err.value)
    assert "\n" not in message and "MaPLe needs deep prompts in the image tower" in message and "ResNet" in message
    assert require(backbone, "MaPLe", {"text": "deep prompts"})["text"].depth == 2
    with pytest.raises(UserError):
        backbone.encode_image_hooked(images(backbone.image_size), TowerHooks(steer={0: Zero(1)}))


def test_misplaced_layers_are_programming_errors(twins):
    backbone = twins("TinyCLIP")
    depth = backbone.tower_layers("image").depth
    x = images(backbone.image_size)
    with pytest.raises(ValueError, match="layers"):
        backbone.encode_image_hooked(x, TowerHooks(steer={depth: Zero(1)}))
    with pytest.raises(ValueError, match="layer 0"):
        backbone.encode_image_hooked(x, TowerHooks(prompts={1: torch.zeros(2, 64)}))


@pytest.mark.parametrize("name", ("TinyBiomedCLIP", "TinyCLIP", "TinyHFCLIP", "TinyPMCCLIP"))
@torch.no_grad()
def test_inserted_text_prompts_are_masked_like_real_tokens(twins, name):
    """Padding stays invisible after an insertion: full-length rows give the trimmed rows' features."""
    backbone = twins(name)
    full = backbone.tokenize(PROMPTS)
    trimmed = backbone.trim(full)
    assert trimmed.shape[1] < full.shape[1]
    prompts = TowerHooks(prompts={0: torch.randn(3, backbone.token_width, generator=torch.Generator().manual_seed(1))})
    short = backbone.encode_text_hooked(backbone.embed_tokens(trimmed), trimmed, prompts)
    long = backbone.encode_text_hooked(backbone.embed_tokens(full), full, prompts)
    torch.testing.assert_close(long, short, rtol=1e-4, atol=1e-5)
    # and the prompts themselves are attended to: other values, other features
    other = TowerHooks(prompts={0: torch.randn(3, backbone.token_width, generator=torch.Generator().manual_seed(2))})
    assert not torch.allclose(backbone.encode_text_hooked(backbone.embed_tokens(trimmed), trimmed, other), short)
