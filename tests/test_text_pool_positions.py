"""The pooled-token contract (Backbone.text_pool_positions): for every family, the token at the
position it names, sent through the family's own final norm / pooler / projection, is exactly the
text feature the family's encode_text returns, and no other position is. EviSteer reads the text's
evidential confidence there."""

import copy

import pytest
import torch

from backbones.clip import TextTransformerCLIP, _text_pieces
from backbones.hf_transformers import HFDualEncoder
from backbones.open_clip_family import (
    HFTextCLIP,
    build_open_clip,
    open_clip_tokenizer,
    shrink_open_clip_config,
    tiny_hf_text_config,
    wrap,
)
from backbones.pmcclip import PMCCLIP
from backbones.tower_hooks import TowerHooks, pooled_positions
from backbones.twins import bert_folder, seeded, toy_vocab
from engine.errors import UserError
from engine.registry import BACKBONE_REGISTRY

TWINS = ["TinyBiomedCLIP", "TinyCLIP", "TinyPubMedCLIP", "TinyPMCCLIP", "TinyHFCLIP", "TinyHFSigLIP",
         "TinyMedSigLIP", "TinyCLIPViTL14", "TinyBMCCLIP", "TinyOpenCLIP"]
PROMPTS = ["a photo of a glioma tumor.", "a brain mri scan", "normal"]


def last_block_states(backbone, run):
    """(what `run()` returns, the text tower's last block output (N, L, width)) from one pass."""
    layers = backbone.tower_layers("text")
    seen = []

    def keep(module, args, out):
        hidden = out if isinstance(out, torch.Tensor) else out[0]
        seen.append(hidden if layers.batch_first else hidden.transpose(0, 1))

    handle = layers.blocks[-1].register_forward_hook(keep)
    try:
        with torch.no_grad():
            result = run()
    finally:
        handle.remove()
    return result, seen[-1]


def family_tail(backbone, token: torch.Tensor) -> torch.Tensor:
    """One token's last-block state (N, width) through what the family applies after pooling it."""
    if isinstance(backbone, TextTransformerCLIP):
        text = _text_pieces(backbone.model)[0]
        x, proj = text.ln_final(token), text.text_projection
        return x if proj is None else proj(x) if isinstance(proj, torch.nn.Linear) else x @ proj
    if isinstance(backbone, HFTextCLIP):  # a class-token pooler: the raw state, or BERT's pooler on it
        text = backbone.model.text
        if getattr(text.pooler, "use_pooler_output", False) and getattr(text.transformer, "pooler", None):
            token = text.transformer.pooler.activation(text.transformer.pooler.dense(token))
        return text.proj(token)
    if isinstance(backbone, PMCCLIP):  # BERT's pooler: tanh(dense(token)), then the projection
        pooler = backbone.model.text.pooler
        return pooler.activation(pooler.dense(token)) @ backbone.model.text_projection
    assert isinstance(backbone, HFDualEncoder)
    text = backbone.model.text_model
    x = text.final_layer_norm(token)
    return text.head(x) if backbone.kind == "siglip" else backbone.model.text_projection(x)


def at(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    return hidden[torch.arange(hidden.shape[0]), positions]


def check_pooled_position(backbone, ids: torch.Tensor, embeds_path: bool) -> torch.Tensor:
    """The contract's positions reproduce encode_text (or encode_text_embeddings) exactly; a shifted
    position does not. Returns the positions."""
    if embeds_path:
        feature, hidden = last_block_states(
            backbone, lambda: backbone.encode_text_embeddings(backbone.embed_tokens(ids), ids))
    else:
        feature, hidden = last_block_states(backbone, lambda: backbone.encode_text(ids))
    positions = backbone.text_pool_positions(ids)
    assert positions.shape == (ids.shape[0],) and positions.dtype == torch.long
    with torch.no_grad():
        assert torch.allclose(family_tail(backbone, at(hidden, positions)), feature, atol=1e-6, rtol=1e-5)
        wrong = (positions + 1) % ids.shape[1]  # any other token gives another feature
        assert not torch.allclose(family_tail(backbone, at(hidden, wrong)), feature, atol=1e-3)
    return positions


@pytest.mark.parametrize("name", TWINS)
def test_each_twin_pools_where_its_contract_says(name):
    backbone = BACKBONE_REGISTRY.get(name)().eval()
    ids = backbone.tokenize(PROMPTS)  # full length: encode_text runs the family's own code
    positions = check_pooled_position(backbone, ids, embeds_path=False)
    trimmed = backbone.trim(ids)  # what trainers feed the spliced path (EviSteer among them)
    assert torch.equal(check_pooled_position(backbone, trimmed, embeds_path=True), positions)
    lengths = backbone.real_lengths(ids)
    if isinstance(backbone, (HFTextCLIP, PMCCLIP)):
        assert positions.tolist() == [0, 0, 0]  # [CLS]
    elif getattr(backbone, "kind", "") == "siglip":
        assert positions.tolist() == [ids.shape[1] - 1] * 3  # the last (padding) position
    else:
        assert torch.equal(positions, lengths - 1)  # CLIP: the end-of-text token, the last real one
        assert len(set(positions.tolist())) == 3  # prompts of three lengths: three positions


def open_clip_text(pool_type: str, **text_cfg):
    """A tiny open_clip model (ViT-B-16's layout shrunk) whose TextTransformer pools by `pool_type`."""
    import open_clip

    config = shrink_open_clip_config(copy.deepcopy(open_clip.get_model_config("ViT-B-16")))
    config["text_cfg"].update(pool_type=pool_type, vocab_size=100, **text_cfg)
    with seeded():
        return wrap(build_open_clip(config, pool_type), None, f"open_clip-{pool_type}").eval()


def synthetic_ids(ends: list[int], end_id: int, length: int = 12) -> torch.Tensor:
    """Rows of ordinary tokens (ids 3-49), `end_id` at each row's end position, padding (0) after."""
    ids = torch.zeros(len(ends), length, dtype=torch.long)
    for row, end in enumerate(ends):
        ids[row, :end] = torch.randint(3, 50, (end,), generator=torch.Generator().manual_seed(row))
        ids[row, end] = end_id
    return ids


@pytest.mark.parametrize("pool_type,extra,expected", [
    ("eos", {"eos_id": 2}, [4, 7, 9]),  # open_clip's 'eos' pooling: the first end token
    ("last", {"no_causal_mask": True}, [11, 11, 11]),  # SigLIP-style open_clip towers
    ("first", {}, [0, 0, 0]),
])
def test_open_clip_pool_types(pool_type, extra, expected):
    backbone = open_clip_text(pool_type, **extra)
    ids = synthetic_ids([4, 7, 9], end_id=2)
    assert check_pooled_position(backbone, ids, embeds_path=True).tolist() == expected


def test_a_mean_pooled_text_tower_refuses_in_one_line():
    import open_clip

    config = shrink_open_clip_config(copy.deepcopy(open_clip.get_model_config("roberta-ViT-B-32")))
    local = bert_folder("TinyOpenCLIP-text", tiny_hf_text_config(), toy_vocab())
    config["text_cfg"].update(hf_pooler_type="mean_pooler")
    with seeded():
        model = build_open_clip(config, "mean", local)
    backbone = wrap(model, open_clip_tokenizer(config["text_cfg"], local, "mean"), "MeanPooled")
    ids = backbone.tokenize(PROMPTS)
    with pytest.raises(UserError) as err:
        pooled_positions(backbone, "EviSteer", ids)
    message = str(err.value)
    assert "\n" not in message and "EviSteer" in message and "MeanPooler" in message and "MeanPooled" in message


@pytest.mark.parametrize("name", ["TinyBiomedCLIP", "TinyCLIP", "TinyHFSigLIP"])
def test_steering_only_the_pooled_token_is_all_that_reaches_the_feature(name):
    """Through the hooked path EviSteer uses: an update after the last block at every token but the
    pooled one leaves the feature as it is; the same update at the pooled token changes it."""
    backbone = BACKBONE_REGISTRY.get(name)().eval()
    ids = backbone.trim(backbone.tokenize(PROMPTS))
    positions = backbone.text_pool_positions(ids)
    last = backbone.tower_layers("text").depth - 1
    pooled = torch.zeros(ids.shape, dtype=torch.bool)
    pooled[torch.arange(ids.shape[0]), positions] = True

    def run(where: torch.Tensor) -> torch.Tensor:
        def bump(tokens: torch.Tensor) -> torch.Tensor:  # not a constant, which a final LayerNorm would remove
            ramp = torch.linspace(-1.0, 1.0, tokens.shape[-1], dtype=tokens.dtype)
            return where[..., None].to(tokens.dtype) * ramp

        with torch.no_grad():
            return backbone.encode_text_hooked(backbone.embed_tokens(ids), ids, TowerHooks(steer={last: bump}))

    with torch.no_grad():
        plain = backbone.encode_text_embeddings(backbone.embed_tokens(ids), ids)
    assert torch.allclose(run(~pooled), plain, atol=1e-6)
    assert not torch.allclose(run(pooled), plain, atol=1e-3)
