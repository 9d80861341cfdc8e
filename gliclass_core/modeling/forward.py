"""Collate passes of any items into padded tensors and run the network once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from gliclass_core.modeling.heads import MarkerBatch, Scored
from gliclass_core.processing.encdec import EncDecPayload
from gliclass_core.processing.packing import BiPayload, UniPayload

if TYPE_CHECKING:
    from gliclass_core.classifier import Classifier, EncodedPass


def _pad(
    rows: Sequence[Sequence[int] | np.ndarray], pad_id: int, device: str
) -> tuple[torch.Tensor, torch.Tensor]:
    # A handful of vectorised copies: all rows joined once, then scattered under the mask.
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    width = int(lengths.max())
    mask = np.arange(width)[None, :] < lengths[:, None]
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    ids[mask] = np.concatenate([np.asarray(r, dtype=np.int64) for r in rows])
    return torch.from_numpy(ids).to(device), torch.from_numpy(mask.astype(np.int64)).to(device)


def _marker_batch(passes: Sequence[EncodedPass], markers: list[tuple[int, ...] | np.ndarray], seps: list[int],
                  device: str) -> MarkerBatch:  # fmt: skip
    counts = np.fromiter((len(m) for m in markers), dtype=np.int64, count=len(markers))
    k = max(1, int(counts.max()))
    valid = np.arange(k)[None, :] < counts[:, None]
    pos = np.zeros((len(passes), k), dtype=np.int64)
    if valid.any():
        pos[valid] = np.concatenate([np.asarray(m, dtype=np.int64) for m in markers])
    return MarkerBatch(
        markers=torch.from_numpy(pos).to(device),
        label_mask=torch.from_numpy(valid).to(device),
        first_sep=torch.tensor(seps, dtype=torch.long, device=device),
        lengths=torch.tensor([p.num_tokens for p in passes], dtype=torch.long, device=device),
    )


def label_vectors(clf: Classifier, payloads: Sequence[BiPayload]) -> dict[str, torch.Tensor]:
    """Vectors for every label in `payloads`: cached ones, the rest in one label-encoder batch."""
    found: dict[str, torch.Tensor] = {}
    missing: dict[str, tuple[int, ...]] = {}
    for p in payloads:
        for label, label_ids in zip(p.labels, p.label_ids):
            if label in found or label in missing:
                continue
            hit = clf.label_vectors.get(label)
            if hit is None:
                missing[label] = label_ids
            else:
                found[label] = hit
    if missing:
        names = list(missing)
        ids, mask = _pad([missing[n] for n in names], clf.pad_id, clf.device)
        vectors = clf.network.label_vectors(ids, mask)
        for name, vec in zip(names, vectors):
            vec = vec.clone()  # own storage, so a cached row does not pin the whole batch tensor
            clf.label_vectors.put(name, vec)
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
    clf: Classifier, passes: Sequence[EncodedPass], ids: torch.Tensor, mask: torch.Tensor
) -> tuple[Scored, torch.Tensor]:
    """Encoder-decoder pass: the label prompts padded as a second batch, markers found in them."""
    cfg = clf.config
    payloads = [p.payload for p in passes]
    if not all(isinstance(x, EncDecPayload) for x in payloads):
        raise TypeError("encoder-decoder passes need EncDecPayload")
    prompts = [x.class_ids for x in payloads]
    class_ids, class_mask = _pad(prompts, clf.pad_id, clf.device)
    markers = [tuple(i for i, t in enumerate(r) if t == cfg.class_token_index) for r in prompts]
    seps = [next((i for i, t in enumerate(r) if t == cfg.text_token_index), 0) for r in prompts]
    k = max(1, max(len(m) for m in markers))
    pos = np.zeros((len(passes), k), dtype=np.int64)
    valid = np.zeros((len(passes), k), dtype=bool)
    for i, m in enumerate(markers):
        pos[i, : len(m)] = m
        valid[i, : len(m)] = True
    mb = MarkerBatch(
        markers=torch.from_numpy(pos).to(clf.device),
        label_mask=torch.from_numpy(valid).to(clf.device),
        first_sep=torch.tensor(seps, dtype=torch.long, device=clf.device),
        lengths=torch.tensor([len(r) for r in prompts], dtype=torch.long, device=clf.device),
    )
    return clf.network.encdec_scored(ids, mask, class_ids, class_mask, mb), mb.label_mask


@torch.inference_mode()
def run_forward(clf: Classifier, passes: Sequence[EncodedPass]) -> list[np.ndarray]:
    """One padded forward pass over `passes` (any items, any label sets); float32 logits per pass.

    Each result has shape (num_labels,), or (2, num_labels) for a calibrated model: the calibrated
    logits, then the raw ones.
    """
    arch = clf.config.architecture
    net = clf.network
    ids, mask = _pad([p.input_ids for p in passes], clf.pad_id, clf.device)
    if clf.config.is_encoder_decoder:
        scored, label_mask = _encdec(clf, passes, ids, mask)
    elif arch == "uni-encoder":
        payloads_u = [p.payload for p in passes]
        if not all(isinstance(x, UniPayload) for x in payloads_u):
            raise TypeError("uni-encoder passes need UniPayload")
        mb = _marker_batch(
            passes, [x.markers for x in payloads_u], [x.first_sep for x in payloads_u], clf.device
        )
        scored = net.uni_scored(ids, mask, mb)
        label_mask = mb.label_mask
    else:
        payloads_b = [p.payload for p in passes]
        if not all(isinstance(x, BiPayload) for x in payloads_b):
            raise TypeError("bi-encoder passes need BiPayload")
        table = label_vectors(clf, payloads_b)
        labels, label_mask = _stack_labels(payloads_b, table)
        if arch == "bi-encoder":
            scored = net.bi_scored(ids, mask, labels, label_mask)
        else:
            mb = _marker_batch(passes, [x.markers for x in payloads_b], [0] * len(passes), clf.device)
            scored = net.fused_scored(ids, mask, labels, mb)
    logits = scored.logits
    if clf.config.logit_bias:
        logits = logits + clf.config.logit_bias
    if net.calibrator is not None:
        calibrated = net.calibrator(scored.text, scored.labels, logits, label_mask)
        both = torch.stack([calibrated, logits], dim=1).float().cpu().numpy()
        return [both[i, :, : p.num_labels].copy() for i, p in enumerate(passes)]
    host = logits.float().cpu().numpy()
    return [host[i, : p.num_labels].copy() for i, p in enumerate(passes)]
