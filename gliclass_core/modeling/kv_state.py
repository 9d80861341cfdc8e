"""A decoder's cached state for one text: per layer keys/values, or linear-attention states.

`KVState` is what a streaming session keeps between appends. It owns plain tensors, not a
`transformers` cache object: every decoder call gets a fresh cache built from it (`to_cache`), so
scoring a label block against a session never changes the session, and the state can be moved to
host memory, cropped to a window, and measured in bytes. Linear-attention layers (hybrid backbones
such as Qwen3.5) keep fixed-size conv / recurrent states that summarise the whole history; they
cannot be cropped, so a window applies to the attention layers only (as in the reference).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class AttentionLayerState:
    """Keys and values of the cached tokens, each (1, heads, tokens, head_dim)."""

    keys: torch.Tensor
    values: torch.Tensor


@dataclass
class LinearLayerState:
    """A linear-attention layer's conv and recurrent states (by state index)."""

    conv: dict[int, torch.Tensor] = field(default_factory=dict)
    recurrent: dict[int, torch.Tensor] = field(default_factory=dict)


LayerState = AttentionLayerState | LinearLayerState | None


@dataclass
class KVState:
    """One text's decoder cache; `next_position` is the position id the next token gets."""

    layers: list[LayerState]
    cached_length: int
    next_position: int

    @property
    def nbytes(self) -> int:
        """Bytes the cached tensors take."""
        total = 0
        for layer in self.layers:
            if isinstance(layer, AttentionLayerState):
                total += _bytes(layer.keys) + _bytes(layer.values)
            elif isinstance(layer, LinearLayerState):
                total += sum(_bytes(t) for t in (*layer.conv.values(), *layer.recurrent.values()))
        return total

    @property
    def device(self) -> torch.device | None:
        for layer in self.layers:
            if isinstance(layer, AttentionLayerState):
                return layer.keys.device
            if isinstance(layer, LinearLayerState):
                for t in (*layer.conv.values(), *layer.recurrent.values()):
                    return t.device
        return None

    def to(self, device: torch.device | str) -> KVState:
        """A copy on `device` (the same object when it is already there)."""
        if self.device is not None and self.device == torch.device(device):
            return self
        layers: list[LayerState] = []
        for layer in self.layers:
            if isinstance(layer, AttentionLayerState):
                layers.append(AttentionLayerState(layer.keys.to(device), layer.values.to(device)))
            elif isinstance(layer, LinearLayerState):
                layers.append(LinearLayerState(
                    {i: t.to(device) for i, t in layer.conv.items()},
                    {i: t.to(device) for i, t in layer.recurrent.items()},
                ))  # fmt: skip
            else:
                layers.append(None)
        return KVState(layers, self.cached_length, self.next_position)

    def crop(self, window: int) -> KVState:
        """The last `window` cached tokens of the attention layers (positions are kept)."""
        if self.cached_length <= window:
            return self
        layers: list[LayerState] = [
            AttentionLayerState(layer.keys[:, :, -window:].clone(), layer.values[:, :, -window:].clone())
            if isinstance(layer, AttentionLayerState)
            else layer
            for layer in self.layers
        ]
        return KVState(layers, window, self.next_position)

    def to_cache(self, decoder_config: Any) -> Any:
        """A fresh `transformers` DynamicCache holding this state.

        Linear states are copied: a decoder call updates them in place.
        """
        from transformers.cache_utils import DynamicCache

        hybrid = any(isinstance(layer, LinearLayerState) for layer in self.layers)
        cache = DynamicCache(config=decoder_config) if hybrid else DynamicCache()
        for index, layer in enumerate(self.layers):
            if isinstance(layer, AttentionLayerState):
                # DynamicLayer.update concatenates into a new tensor: ours are never written to.
                cache.update(layer.keys, layer.values, index)
            elif isinstance(layer, LinearLayerState):
                _fill_linear(cache.layers[index], layer)
        return cache

    @classmethod
    def from_cache(cls, cache: Any, cached_length: int, next_position: int) -> KVState:
        """Take the state out of a cache a decoder call returned (batch size 1)."""
        layers: list[LayerState] = []
        for layer in cache.layers:
            if hasattr(layer, "recurrent_states"):
                conv = {i: t for i, t in layer.conv_states.items() if layer.is_conv_states_initialized[i]}
                rec = layer.recurrent_states.items()
                recurrent = {i: t for i, t in rec if layer.is_recurrent_states_initialized[i]}
                layers.append(LinearLayerState(conv, recurrent))
            elif getattr(layer, "is_initialized", False):
                layers.append(AttentionLayerState(layer.keys, layer.values))
            else:
                layers.append(None)
        return cls(layers, cached_length, next_position)


def _fill_linear(target: Any, state: LinearLayerState) -> None:
    for index, conv in state.conv.items():
        target.conv_states[index] = conv.clone()
        target.conv_kernel_size[index] = conv.shape[-1]
        target.is_conv_states_initialized[index] = True
        target.has_previous_state[index] = True
        target.device, target.dtype = conv.device, conv.dtype
    for index, recurrent in state.recurrent.items():
        target.recurrent_states[index] = recurrent.clone()
        target.is_recurrent_states_initialized[index] = True
        target.has_previous_state[index] = True


def _bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()
