"""One GLiClass network call: collate passes of any items into padded tensors, run the heads once."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from gliclass_core.modeling.collate import marker_batch, pad_rows
from gliclass_core.modeling.config import GLiClassConfig
from gliclass_core.modeling.heads import GLiClassNetwork, Scored
from gliclass_core.processing.encdec import EncDecPayload
from gliclass_core.processing.packing import BiPayload, UniPayload
from gliclass_core.processing.tokens import LRUCache
from gliclass_core.types import EncodedPass


def label_vectors(
    network: GLiClassNetwork, payloads: Sequence[BiPayload], cache: LRUCache, pad_id: int, device: str
) -> dict[str, torch.Tensor]:
    """Vectors for every label in `payloads`: cached ones, the rest in one label-encoder batch."""
    found: dict[str, torch.Tensor] = {}
    missing: dict[str, tuple[int, ...]] = {}
    for p in payloads:
        for label, label_ids in zip(p.labels, p.label_ids):
            if label in found or label in missing:
                continue
            hit = cache.get(label)
            if hit is None:
                missing[label] = label_ids
            else:
                found[label] = hit
    if missing:
        names = list(missing)
        ids, mask = pad_rows([missing[n] for n in names], pad_id, device)
        vectors = network.label_vectors(ids, mask)
        for name, vec in zip(names, vectors):
            vec = vec.clone()  # own storage, so a cached row does not pin the whole batch tensor
            cache.put(name, vec)
            found[name] = vec
    return found


def _stack_labels(
    payloads: Sequence[BiPayload], table: dict[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    k = max(len(p.labels) for p in payloads)
    any_vec = next(iter(table.values()))
    out = any_vec.new_zeros((len(payloads), k, any_vec.shape[-1]))
    mask = torch.zeros((len(payloads), k), dtype=torch.bool, device=any_vec.device)
    for i, p in enumerate(payloads):
        if p.labels:
            out[i, : len(p.labels)] = torch.stack([table[label] for label in p.labels])
            mask[i, : len(p.labels)] = True
    return out, mask


def _encdec(
    network: GLiClassNetwork,
    config: GLiClassConfig,
    passes: Sequence[EncodedPass],
    ids: torch.Tensor,
    mask: torch.Tensor,
    pad_id: int,
    device: str,
) -> tuple[Scored, torch.Tensor]:
    """Encoder-decoder pass: the label prompts padded as a second batch, markers found in them."""
    payloads = [p.payload for p in passes]
    if not all(isinstance(x, EncDecPayload) for x in payloads):
        raise TypeError("encoder-decoder passes need EncDecPayload")
    prompts = [x.class_ids for x in payloads]
    class_ids, class_mask = pad_rows(prompts, pad_id, device)
    markers = [tuple(i for i, t in enumerate(r) if t == config.class_token_index) for r in prompts]
    seps = [next((i for i, t in enumerate(r) if t == config.text_token_index), 0) for r in prompts]
    mb = marker_batch(markers, seps, [len(r) for r in prompts], device)
    return network.encdec_scored(ids, mask, class_ids, class_mask, mb), mb.label_mask


@torch.inference_mode()
def run_forward(
    network: GLiClassNetwork,
    config: GLiClassConfig,
    passes: Sequence[EncodedPass],
    *,
    pad_id: int,
    device: str,
    label_cache: LRUCache,
) -> list[np.ndarray]:
    """One padded forward pass over `passes` (any items, any label sets); float32 logits per pass.

    `network` is a GLiClassNetwork on `device` with its checkpoint `config`; `label_cache` holds
    the bi-encoder label vectors (label text -> vector on `device`). Each result has shape
    (num_labels,), or (2, num_labels) for a calibrated model: the calibrated logits, then the raw ones.
    """
    arch = config.architecture
    ids, mask = pad_rows([p.input_ids for p in passes], pad_id, device)
    lengths = [p.num_tokens for p in passes]
    if config.is_encoder_decoder:
        scored, label_mask = _encdec(network, config, passes, ids, mask, pad_id, device)
    elif arch == "uni-encoder":
        payloads_u = [p.payload for p in passes]
        if not all(isinstance(x, UniPayload) for x in payloads_u):
            raise TypeError("uni-encoder passes need UniPayload")
        mb = marker_batch([x.markers for x in payloads_u], [x.first_sep for x in payloads_u], lengths, device)
        scored = network.uni_scored(ids, mask, mb)
        label_mask = mb.label_mask
    else:
        payloads_b = [p.payload for p in passes]
        if not all(isinstance(x, BiPayload) for x in payloads_b):
            raise TypeError("bi-encoder passes need BiPayload")
        table = label_vectors(network, payloads_b, label_cache, pad_id, device)
        labels, label_mask = _stack_labels(payloads_b, table)
        if arch == "bi-encoder":
            scored = network.bi_scored(ids, mask, labels, label_mask)
        else:
            mb = marker_batch([x.markers for x in payloads_b], [0] * len(passes), lengths, device)
            scored = network.fused_scored(ids, mask, labels, mb)
    logits = scored.logits
    if config.logit_bias:
        logits = logits + config.logit_bias
    if network.calibrator is not None:
        calibrated = network.calibrator(scored.text, scored.labels, logits, label_mask)
        both = torch.stack([calibrated, logits], dim=1).float().cpu().numpy()
        return [both[i, :, : p.num_labels].copy() for i, p in enumerate(passes)]
    host = logits.float().cpu().numpy()
    return [host[i, : p.num_labels].copy() for i, p in enumerate(passes)]
