"""Run many sessions' decoder calls as one batch: caches left-padded, new tokens right-padded.

Row i of a batch is `[zeros | session i's cached tokens | its new tokens | padding]`; the attention
mask hides the zeros and the padding and each row's position ids continue its own text, so every
row computes what it would alone (as the reference's `BatchedKVHelper` does). Hybrid backbones
(linear-attention states, which padding would change) run one session at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from gliclass_core.modeling.kv_state import AttentionLayerState, KVState

if TYPE_CHECKING:
    from gliclass_core.modeling.decoder_kv import DecoderKVNetwork


def _call(net: DecoderKVNetwork, states: Sequence[KVState | None], tokens: Sequence[Sequence[int]],
          use_cache: bool) -> tuple[Any, int, torch.Tensor]:  # fmt: skip
    dev = net.device
    cached = [s.cached_length if s is not None else 0 for s in states]
    widest, longest = max(cached), max(len(t) for t in tokens)
    ids = torch.zeros((len(states), longest), dtype=torch.long)
    mask = torch.zeros((len(states), widest + longest), dtype=torch.long)
    positions = torch.zeros((len(states), longest), dtype=torch.long)
    for i, (state, row) in enumerate(zip(states, tokens)):
        ids[i, : len(row)] = torch.as_tensor(list(row), dtype=torch.long)
        mask[i, widest - cached[i] : widest + len(row)] = 1
        start = state.next_position if state is not None else 0
        positions[i] = torch.arange(start, start + longest)
    cache = None
    if widest:
        from transformers.cache_utils import DynamicCache

        cache = DynamicCache()
        reference = next(s for s in states if s is not None and s.cached_length)
        for index, layer in enumerate(reference.layers):
            if not isinstance(layer, AttentionLayerState):
                raise ValueError("batched session calls need an attention-only backbone")
            keys, values = [], []
            for state, count in zip(states, cached):
                own = state.layers[index] if state is not None else None
                shape = (1, layer.keys.shape[1], widest - count, layer.keys.shape[3])
                pad = torch.zeros(shape, dtype=layer.keys.dtype, device=dev)
                if isinstance(own, AttentionLayerState):
                    keys.append(torch.cat([pad, own.keys.to(dev)], dim=2))
                    values.append(torch.cat([pad, own.values.to(dev)], dim=2))
                else:
                    keys.append(pad)
                    values.append(pad)
            cache.update(torch.cat(keys), torch.cat(values), index)
    out = net.decoder_model(
        input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=positions.to(dev),
        past_key_values=cache, use_cache=use_cache,
    )  # fmt: skip
    return out, widest, ids.to(dev)


@torch.inference_mode()
def extend_many(
    net: DecoderKVNetwork, states: Sequence[KVState | None], tokens: Sequence[Sequence[int]]
) -> list[KVState]:
    """Each state with its tokens appended (every `tokens[i]` non-empty); the states are unchanged."""
    if net.cfg.hybrid or len(states) == 1:
        return [net.extend(s, t) for s, t in zip(states, tokens)]
    out, widest, _ = _call(net, states, tokens, use_cache=True)
    result = []
    for i, (state, row) in enumerate(zip(states, tokens)):
        count = state.cached_length if state is not None else 0
        layers: list[Any] = [
            AttentionLayerState(
                layer.keys[i : i + 1, :, widest - count : widest + len(row)].clone(),
                layer.values[i : i + 1, :, widest - count : widest + len(row)].clone(),
            )
            for layer in out.past_key_values.layers
        ]
        start = state.next_position if state is not None else 0
        result.append(KVState(layers, count + len(row), start + len(row)))
    return result


@torch.inference_mode()
def score_cached_many(
    net: DecoderKVNetwork, states: Sequence[KVState], blocks: Sequence[Sequence[int]]
) -> list[np.ndarray]:
    """Logits of each label block read after its state (as `DecoderKVNetwork.score_cached`)."""
    if net.cfg.hybrid or len(states) == 1:
        return [net.score_cached(s, b) for s, b in zip(states, blocks)]
    out, _, ids = _call(net, states, blocks, use_cache=False)
    rows = [(i, 0, len(block)) for i, block in enumerate(blocks)]
    return net._score_blocks(out.last_hidden_state, ids, rows)
