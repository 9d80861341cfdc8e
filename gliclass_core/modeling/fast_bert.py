"""Inference fast path for BERT-family encoders: no compute on padding, optional last-layer pruning.

`transformers`' BertModel runs every layer on the padded (B, S) grid. Here the token-wise work
(embeddings, projections, feed-forward, layer norms) runs on the packed real tokens only, and only
attention sees the padded grid (SDPA with a key mask). When the head reads just a few positions
(first-token pooling, class-token "first"), the last layer computes queries and the feed-forward
only there. Same weights (read from the HF module on every call, so training updates are seen),
same arithmetic up to float rounding; anything unusual falls back to the HF module.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

SUPPORTED = ("bert",)
# Run token-wise work packed when real tokens are less than this share of the padded grid.
PACK_BELOW = 0.9


def supports(model: nn.Module) -> bool:
    """Whether `model` is a plain absolute-position BERT we can run ourselves."""
    cfg = getattr(model, "config", None)
    return (
        cfg is not None
        and getattr(cfg, "model_type", None) in SUPPORTED
        and getattr(cfg, "position_embedding_type", "absolute") == "absolute"
        and not getattr(cfg, "is_decoder", False)
        and hasattr(model, "embeddings")
        and hasattr(model, "encoder")
    )


def _fused_qkv(att: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's query, key and value projections as one (3D, D) weight and (3D,) bias.

    Kept on the module between calls, keyed by the parts' storage and version counters: a training
    step (in place, so the version moves), a `.to()` (new storage) or a load rebuilds it, and the
    concatenation is not paid again on every forward pass.
    """
    parts = (att.query.weight, att.key.weight, att.value.weight, att.query.bias, att.key.bias, att.value.bias)
    if any(t.is_inference() for t in parts):  # no version counter: nothing safe to key a copy on
        return torch.cat(parts[:3], 0), torch.cat(parts[3:], 0)
    key = tuple((t.data_ptr(), t._version, t.dtype) for t in parts)
    cached = getattr(att, "_gliclass_fused_qkv", None)
    if cached is not None and cached[0] == key:
        return cached[1], cached[2]
    w = torch.cat(parts[:3], 0)
    b = torch.cat(parts[3:], 0)
    # Not a registered buffer: a copy of existing parameters, never saved with the state dict.
    object.__setattr__(att, "_gliclass_fused_qkv", (key, w, b))
    return w, b


def _layer_norm(x: torch.Tensor, ln: Any) -> torch.Tensor:
    return F.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps)


def bert_forward(
    model: Any,
    input_ids: torch.Tensor | None,
    attention_mask: torch.Tensor,
    inputs_embeds: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
) -> torch.Tensor:
    """Last hidden state (B, S, D); with `keep` (B, P) positions, only those rows are valid at the end."""
    cfg = model.config
    emb = model.embeddings
    mask = attention_mask.bool()
    bsz, seq = mask.shape
    total = bsz * seq
    real = mask.reshape(-1).nonzero().squeeze(1)  # grid index of every real token
    # Pack only when it saves enough: with little padding the gathers cost more than they save.
    flat: torch.Tensor | None = real if real.numel() < PACK_BELOW * total else None

    pad = (~mask).reshape(-1).nonzero().squeeze(1) if flat is not None else None

    def to_grid(t: torch.Tensor) -> torch.Tensor:
        if flat is None:
            return t
        # Zero only the padding rows (masked keys must still be finite), then scatter the real ones.
        grid = t.new_empty(total, t.shape[-1])
        grid[pad] = 0
        grid[flat] = t
        return grid

    def from_grid(t: torch.Tensor) -> torch.Tensor:
        return t if flat is None else t[flat]

    positions = from_grid(torch.arange(seq, device=mask.device).repeat(bsz).unsqueeze(1)).squeeze(1)
    if inputs_embeds is not None:
        words = from_grid(inputs_embeds.reshape(total, -1))
    else:
        assert input_ids is not None
        words = emb.word_embeddings(from_grid(input_ids.reshape(total, 1)).squeeze(1))
    type_row = emb.token_type_embeddings.weight[0]
    x = _layer_norm(words + type_row + emb.position_embeddings(positions), emb.LayerNorm)

    heads = cfg.num_attention_heads
    dim = x.shape[-1]
    head_dim = dim // heads
    key_mask = mask.view(bsz, 1, 1, seq)
    layers = model.encoder.layer
    keep_flat = None
    if keep is not None:
        rows = torch.arange(bsz, device=mask.device).unsqueeze(1).expand_as(keep)
        keep_flat = (rows * seq + keep).reshape(-1)
    for i, layer in enumerate(layers):
        att = layer.attention.self
        w, b = _fused_qkv(att)
        qkv = to_grid(F.linear(x, w, b)).view(bsz, seq, 3, heads, head_dim)
        k = qkv[:, :, 1].transpose(1, 2)
        v = qkv[:, :, 2].transpose(1, 2)
        last = i == len(layers) - 1
        if last and keep_flat is not None:
            q = qkv.view(total, 3, heads, head_dim)[keep_flat, 0]
            q = q.view(bsz, -1, heads, head_dim).transpose(1, 2)
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
            ctx = ctx.transpose(1, 2).reshape(-1, dim)
            residual = to_grid(x)[keep_flat]
        else:
            q = qkv[:, :, 0].transpose(1, 2)
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask)
            ctx = from_grid(ctx.transpose(1, 2).reshape(total, dim))
            residual = x
        out = layer.attention.output
        h = _layer_norm(F.linear(ctx, out.dense.weight, out.dense.bias) + residual, out.LayerNorm)
        inter = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(h))
        x = _layer_norm(layer.output.dense(inter) + h, layer.output.LayerNorm)
        if last and keep_flat is not None:
            full = x.new_zeros(total, dim)
            full[keep_flat] = x
            return full.view(bsz, seq, dim)
    return to_grid(x).view(bsz, seq, dim)
