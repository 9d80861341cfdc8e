"""GliZNet as a `Trainable`: one pass per example, composite loss, label order shuffled each step."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gliclass_core.modeling.gliznet import GliZNet
from gliclass_core.processing.postprocess import scores_from_logits
from gliclass_core.training.datasets import LabelledExample
from gliclass_core.training.losses import gliznet_loss, target_matrix
from gliclass_core.training.trainer import split_parameters


class GliZNetTrainable:
    """Adapts a loaded `GliZNet` to the training loop."""

    def __init__(self, net: GliZNet, seed: int = 0, shuffle_labels: bool = True) -> None:
        self.net = net
        self.module: nn.Module = net.model
        self.shuffle_labels = shuffle_labels
        self._rng = random.Random(seed)
        #: labels left out of training because they did not fit max_length beside the text
        self.dropped_labels = 0

    def to(self, device: str) -> None:
        self.net.model.to(device)
        self.net.device = device  # where `GliZNet.collate` builds the inputs

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        return split_parameters(self.net.model, [self.net.model.encoder])

    def compute_loss(self, batch: Sequence[LabelledExample]) -> tuple[torch.Tensor, dict[str, float]]:
        passes, rows = [], []
        for ex in batch:
            order = list(range(len(ex.labels)))
            if self.shuffle_labels:
                # Labels are read by position in the sequence; shuffling keeps the model from learning slots.
                self._rng.shuffle(order)
            labels = [ex.labels[i] for i in order]
            first = self.net.pack(ex.text, labels, max_passes=1)[0]
            self.dropped_labels += len(labels) - first.num_labels
            passes.append(first)
            rows.append([ex.targets[i] for i in order[: first.num_labels]])
        inputs = self.net.collate(passes)
        out = self.net.model(**inputs)
        targets = target_matrix(rows, out.logits)
        c = self.net.config
        parts = gliznet_loss(
            out.logits,
            out.cosine,
            out.label_embeddings,
            targets,
            out.label_mask,
            self.net.model.bce_scale,
            c.ce_weight,
            c.repulsion_weight,
            c.bce_weight,
            c.repulsion_threshold,
        )
        parts_log = {"ce": parts.ce, "repulsion": parts.repulsion, "bce": parts.bce}
        return parts.total, {k: float(v.detach()) for k, v in parts_log.items()}

    def predict(
        self, texts: Sequence[str], labels: Sequence[Sequence[str]], multi_label: bool = True
    ) -> list[dict[str, float]]:
        self.net.model.eval()
        items = [self.net.pack(t, list(lbls)) for t, lbls in zip(texts, labels)]
        logits = self.net.forward([p for passes in items for p in passes])
        out, pos = [], 0
        for passes in items:
            names = [lbl for p in passes for lbl in p.labels]
            row = scores_from_logits(np.concatenate(logits[pos : pos + len(passes)]), multi_label)
            pos += len(passes)
            out.append({n: float(s) for n, s in zip(names, row)})
        return out

    def save(self, path: str | Path) -> None:
        self.net.save_pretrained(path)
