"""Padding for inference batches: token-id rows into (ids, mask) tensors, label positions into index grids.

Every forward pass pads through here (GLiClass rows, bi-encoder label prompts, encoder-decoder
label prompts, GliZNet rows and label spans, the ONNX export's calibration rows).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from gliclass_core.modeling.heads import MarkerBatch


def pad_rows(
    rows: Sequence[Sequence[int] | np.ndarray], pad_id: int, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token-id rows with `pad_id`: int64 (ids, attention mask) of shape (rows, longest row)."""
    # A handful of vectorised copies: all rows joined once, then scattered under the mask.
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    width = int(lengths.max())
    mask = np.arange(width)[None, :] < lengths[:, None]
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    ids[mask] = np.concatenate([np.asarray(r, dtype=np.int64) for r in rows])
    return torch.from_numpy(ids).to(device), torch.from_numpy(mask.astype(np.int64)).to(device)


def marker_batch(
    markers: Sequence[Sequence[int] | np.ndarray], seps: Sequence[int], lengths: Sequence[int], device: str
) -> MarkerBatch:
    """Label-marker positions of each row, padded to the most labels (`label_mask` marks real ones)."""
    counts = np.fromiter((len(m) for m in markers), dtype=np.int64, count=len(markers))
    k = max(1, int(counts.max()))
    valid = np.arange(k)[None, :] < counts[:, None]
    pos = np.zeros((len(markers), k), dtype=np.int64)
    if valid.any():
        pos[valid] = np.concatenate([np.asarray(m, dtype=np.int64) for m in markers])
    return MarkerBatch(
        markers=torch.from_numpy(pos).to(device),
        label_mask=torch.from_numpy(valid).to(device),
        first_sep=torch.tensor(list(seps), dtype=torch.long, device=device),
        lengths=torch.tensor(list(lengths), dtype=torch.long, device=device),
    )


def pad_spans(spans: Sequence[Sequence[tuple[int, int]]], device: str | torch.device = "cpu") -> torch.Tensor:
    """[start, end) label spans of each row as a (rows, most labels, 2) tensor, -1 in empty slots."""
    k = max((len(s) for s in spans), default=0)
    out = np.full((len(spans), k, 2), -1, dtype=np.int64)
    for row, row_spans in enumerate(spans):
        if row_spans:
            out[row, : len(row_spans)] = np.asarray(row_spans, dtype=np.int64)
    return torch.from_numpy(out).to(device)
