"""The decoder-kv network: a decoder LLM backbone plus `DecoderKVScorer`, and its checkpoint loading.

Two ways to run it:

- `score_rows`: whole rows `[prompt][examples]text<<SEP>>label1<<LABEL>>...<<SEP>>` in one padded
  pass (right padding: under causal attention a row's tokens never see its padding, so scores do
  not depend on the batch); the scorer reads the block after the first `<<SEP>>` of the label block.
- `extend` / `score_cached`: a text kept as a `KVState` is extended chunk by chunk, and a label
  block `<<SEP>>label1<<LABEL>>...<<SEP>>` is scored against it without changing it. As in the
  reference's streaming pipeline, the scorer then reads the whole block, its opening `<<SEP>>` too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gliclass_core.errors import CheckpointError, UnsupportedModel
from gliclass_core.modeling.decoder_kv_config import (
    NO_KV_CACHE,
    DecoderKVConfig,
    is_decoder_kv_config,
    parse_decoder_kv_config,
)
from gliclass_core.modeling.decoder_kv_scorer import DecoderKVScorer
from gliclass_core.modeling.kv_state import KVState

_DROP_KEYS = ("_name_or_path", "transformers_version", "architectures", "dtype", "torch_dtype", "model_type")
# Weights of parts the reference builds but never runs with our accepted configs (EmbeddingGemma 2's
# media towers: the reference drops them for text-only decoder-kv and ignores their weights).
_UNUSED = ("scorer.reasoning_cell.",)
_MEDIA = tuple(
    f"decoder_model.{part}." for part in ("vision_tower", "embed_vision", "audio_tower", "embed_audio")
)
_MODEL_TYPES = {
    "Qwen3Model": "qwen3",
    "Qwen3_5TextModel": "qwen3_5_text",
    "EmbeddingGemma2Model": "embedding_gemma2",
}


def build_backbone(cfg: DecoderKVConfig) -> tuple[nn.Module, Any]:
    """Instantiate the decoder (random weights) and return it with its transformers config."""
    import transformers

    kwargs = {k: v for k, v in cfg.decoder_config.items() if k not in _DROP_KEYS}
    model_type = _MODEL_TYPES[cfg.backbone]
    if cfg.bidirectional:
        text = {k: v for k, v in cfg.text_config.items() if k not in _DROP_KEYS}
        kwargs.update(text_config=text, vision_config=None, audio_config=None)
    try:
        hf_config = transformers.AutoConfig.for_model(model_type, **kwargs)
        model = getattr(transformers, cfg.backbone)(hf_config)
    except (ValueError, KeyError, AttributeError, TypeError) as exc:
        raise UnsupportedModel(f"cannot build the decoder-kv backbone {cfg.backbone}: {exc}") from exc
    if cfg.bidirectional and not cfg.use_embedding_projection:
        # As the reference: the scorer reads the final-norm states, not the ~30x-scaled sentence projection.
        model.language_model.embedding_projection = nn.Identity()
    return model, hf_config


class DecoderKVNetwork(nn.Module):
    """Backbone (`decoder_model`) and scorer (`scorer`), named as in the reference's weights."""

    def __init__(self, cfg: DecoderKVConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.decoder_model, self.decoder_config = build_backbone(cfg)
        self.scorer = DecoderKVScorer(cfg)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.inference_mode()
    def score_rows(self, rows: Sequence[tuple[Sequence[int], int]], pad_id: int) -> list[np.ndarray]:
        """Logits per row `(ids, block_start)`: the scorer reads `ids[block_start:]`."""
        dev = self.device
        width = max(len(ids) for ids, _ in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (row, _) in enumerate(rows):
            ids[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
            mask[i, : len(row)] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        if self.cfg.bidirectional:
            # Every token sees the whole row; the mask keeps each row's padding out of its attention.
            states = self.decoder_model(input_ids=ids, attention_mask=mask).last_hidden_state
        else:
            states = self.decoder_model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        blocks = [(i, start, len(row)) for i, (row, start) in enumerate(rows)]
        return self._score_blocks(states, ids, blocks)

    def _score_blocks(
        self, states: torch.Tensor, ids: torch.Tensor, blocks: list[tuple[int, int, int]]
    ) -> list[np.ndarray]:
        longest = max(end - start for _, start, end in blocks)
        block_states = states.new_zeros(len(blocks), longest, states.shape[-1])
        block_ids = ids.new_zeros(len(blocks), longest)
        block_mask = ids.new_zeros(len(blocks), longest)
        for j, (i, start, end) in enumerate(blocks):
            block_states[j, : end - start] = states[i, start:end]
            block_ids[j, : end - start] = ids[i, start:end]
            block_mask[j, : end - start] = 1
        logits = self.scorer(block_states, block_ids, block_mask).float().cpu().numpy()
        counts = (block_ids.eq(self.cfg.class_token_index) & block_mask.bool()).sum(dim=1).tolist()
        return [logits[j, : counts[j]].copy() for j in range(len(blocks))]

    def _require_kv_cache(self) -> None:
        if self.cfg.bidirectional:
            raise UnsupportedModel(NO_KV_CACHE.format(backbone=self.cfg.backbone))

    @torch.inference_mode()
    def extend(self, state: KVState | None, ids: Sequence[int]) -> KVState:
        """`state` (None: an empty text) with the tokens `ids` appended; `state` itself is unchanged."""
        self._require_kv_cache()
        if not ids:
            raise ValueError("nothing to append")
        dev = self.device
        cached = state.cached_length if state is not None else 0
        start = state.next_position if state is not None else 0
        new = torch.as_tensor([list(ids)], dtype=torch.long, device=dev)
        out = self.decoder_model(
            input_ids=new,
            attention_mask=torch.ones((1, cached + len(ids)), dtype=torch.long, device=dev),
            position_ids=torch.arange(start, start + len(ids), device=dev).unsqueeze(0),
            past_key_values=state.to(dev).to_cache(self.decoder_config) if state is not None else None,
            use_cache=True,
        )
        return KVState.from_cache(out.past_key_values, cached + len(ids), start + len(ids))

    @torch.inference_mode()
    def score_cached(self, state: KVState, block: Sequence[int]) -> np.ndarray:
        """Logits of the label block `block` (`<<SEP>>l1<<LABEL>>...<<SEP>>`) read after `state`."""
        self._require_kv_cache()
        dev = self.device
        ids = torch.as_tensor([list(block)], dtype=torch.long, device=dev)
        out = self.decoder_model(
            input_ids=ids,
            attention_mask=torch.ones((1, state.cached_length + len(block)), dtype=torch.long, device=dev),
            position_ids=torch.arange(
                state.next_position, state.next_position + len(block), device=dev
            ).unsqueeze(0),
            past_key_values=state.to(dev).to_cache(self.decoder_config),
            use_cache=False,
        )
        states = out.last_hidden_state[:, -len(block) :]
        return self._score_blocks(states, ids, [(0, 0, len(block))])[0]


def is_decoder_kv_dir(directory: Path) -> bool:
    """Tell whether a checkpoint directory holds a decoder-kv model (reads only config.json)."""
    try:
        raw = json.loads((Path(directory) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(raw, dict) and is_decoder_kv_config(raw)


def read_raw_config(directory: Path) -> dict[str, Any]:
    """config.json as a dict (CheckpointError when missing or not JSON)."""
    path = directory / "config.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read ({exc})") from exc
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return raw


def load_decoder_kv(directory: Path) -> DecoderKVNetwork:
    """Build the network for the checkpoint's config.json and load its weights strictly."""
    from gliclass_core.modeling.loading import WEIGHT_PREFIX, read_state_dict

    cfg = parse_decoder_kv_config(read_raw_config(directory))
    net = DecoderKVNetwork(cfg)
    state = {k.removeprefix(WEIGHT_PREFIX): v for k, v in read_state_dict(directory).items()}
    unused = _UNUSED + _MEDIA if cfg.bidirectional else _UNUSED
    state = {k: v for k, v in state.items() if not k.startswith(unused)}
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise CheckpointError(
            f"{directory}: weights do not match config.json: missing {missing[:3]} ({len(missing)}), "
            f"unexpected {unexpected[:3]} ({len(unexpected)})"
        )
    bad = [k for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise CheckpointError(
            f"{directory}: weight {bad[0]} has shape {tuple(state[bad[0]].shape)}, "
            f"config implies {tuple(own[bad[0]].shape)}"
        )
    net.load_state_dict(state)
    return net.eval()
