"""The training loop: AdamW with separate encoder/head learning rates, warmup + linear decay,
a progress bar on stderr (loss, examples/s), evaluation each epoch and early stopping.

Models plug in through the `Trainable` protocol below (implemented by
`gliclass_core.training.gliclass_trainable` and `gliclass_core.training.gliznet_trainable`), so
GLiClass and GliZNet share one loop.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from gliclass_core.training.datasets import LabelledExample, batches
from gliclass_core.training.evaluation import EvalReport, evaluate


class Trainable(Protocol):
    """What the loop needs from a model family."""

    module: nn.Module

    def to(self, device: str) -> None:
        """Move the model (and where its inputs are built) to `device`."""
        ...

    def param_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """Return (encoder parameters, head parameters)."""
        ...

    def compute_loss(self, batch: Sequence[LabelledExample]) -> tuple[torch.Tensor, dict[str, float]]:
        """Return the scalar loss of a batch (with grad) and named parts for logging."""
        ...

    def predict(
        self, texts: Sequence[str], labels: Sequence[Sequence[str]], multi_label: bool = True
    ) -> list[dict[str, float]]:
        """Return {label: probability} per text (no grad, eval mode)."""
        ...

    def save(self, path: str | Path) -> None:
        """Write a checkpoint the server loads directly."""
        ...


@dataclass
class TrainConfig:
    """Hyperparameters of one run."""

    epochs: int = 3
    batch_size: int = 8
    encoder_lr: float = 2e-5
    head_lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    patience: int = 2
    # Keep the best epoch by eval macro-F1 and stop after `patience` epochs without a gain. Off:
    # every epoch is still evaluated (for the report) but the last epoch is kept, all epochs run.
    select_best: bool = True
    # Score the starting model on the eval set first, so the report shows the lift (or the loss).
    eval_before: bool = True
    threshold: float = 0.5
    multi_label: bool = True
    seed: int = 0
    max_steps: int | None = None
    freeze_encoder: bool = False
    freeze_embeddings: bool = False
    progress: bool = True


@dataclass
class EpochResult:
    """Per-epoch training loss, evaluation and speed."""

    epoch: int
    train_loss: float
    examples_per_s: float
    eval: EvalReport | None = None


@dataclass
class TrainResult:
    """Summary of a run: epochs, the best epoch by eval macro-F1, overall training speed."""

    epochs: list[EpochResult] = field(default_factory=list)
    best_epoch: int | None = None
    best_macro_f1: float | None = None
    # The starting model on the eval set (epoch 0), when `eval_before`.
    before: EvalReport | None = None
    examples_per_s: float = 0.0
    steps: int = 0
    stopped_early: bool = False
    saved_to: str | None = None

    @property
    def losses(self) -> list[float]:
        return [e.train_loss for e in self.epochs]

    @property
    def final(self) -> EvalReport | None:
        """The eval report of the saved model: the best epoch's, or the last one's."""
        if self.best_epoch is None:
            return None
        return next((e.eval for e in self.epochs if e.epoch == self.best_epoch), None)


def split_parameters(
    module: nn.Module, encoders: Sequence[nn.Module]
) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """`Trainable.param_groups` of a model: the encoders' parameters, then the rest of `module`'s."""
    encoder = [p for m in encoders for p in m.parameters()]
    ids = {id(p) for p in encoder}
    return encoder, [p for p in module.parameters() if id(p) not in ids]


def make_optimizer(model: Trainable, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with the encoder and the heads in separate groups (own learning rates)."""
    encoder, heads = model.param_groups()
    if cfg.freeze_encoder:
        for p in encoder:
            p.requires_grad_(False)
    elif cfg.freeze_embeddings:
        # Token embedding tables are most of a small encoder's weights, and a few examples touch few rows.
        frozen = {id(m.weight) for m in model.module.modules() if isinstance(m, nn.Embedding)}
        for p in encoder:
            if id(p) in frozen:
                p.requires_grad_(False)
        encoder = [p for p in encoder if id(p) not in frozen]
    groups: list[dict[str, Any]] = []
    if not cfg.freeze_encoder and encoder:
        groups.append({"params": encoder, "lr": cfg.encoder_lr, "name": "encoder"})
    if heads:
        groups.append({"params": heads, "lr": cfg.head_lr, "name": "heads"})
    if not groups:
        raise ValueError("nothing to train: no trainable parameters")
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


def linear_schedule(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    """LR multiplier: linear warmup, then linear decay to zero."""
    warmup = int(total_steps * warmup_ratio)

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


def train(
    model: Trainable,
    train_set: Sequence[LabelledExample],
    eval_set: Sequence[LabelledExample] = (),
    cfg: TrainConfig | None = None,
    output_dir: str | Path | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train, evaluating each epoch; keep the best checkpoint in `output_dir`; stop early on `patience`."""
    from tqdm import tqdm

    cfg = cfg or TrainConfig()
    log = log or (lambda msg: print(msg, file=sys.stderr))
    torch.manual_seed(cfg.seed)
    optimizer = make_optimizer(model, cfg)
    steps_per_epoch = math.ceil(len(train_set) / cfg.batch_size)
    total = (
        steps_per_epoch * cfg.epochs
        if cfg.max_steps is None
        else min(cfg.max_steps, steps_per_epoch * cfg.epochs)
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(total, cfg.warmup_ratio))
    result = TrainResult()
    trainable = [p for g in optimizer.param_groups for p in g["params"]]
    seen_total, time_total, bad_epochs = 0, 0.0, 0
    score = partial(evaluate, partial(model.predict, multi_label=cfg.multi_label))
    if eval_set and cfg.eval_before:
        model.module.eval()
        result.before = score(eval_set, cfg.threshold, cfg.multi_label)
        before = result.before
        log(f"before training: eval macro-F1 {before.macro_f1:.4f}, micro-F1 {before.micro_f1:.4f}")
    for epoch in range(1, cfg.epochs + 1):
        model.module.train()
        bar = tqdm(
            total=min(steps_per_epoch, total - result.steps),
            desc=f"epoch {epoch}/{cfg.epochs}",
            file=sys.stderr,
            disable=not cfg.progress,
            unit="step",
            dynamic_ncols=True,
        )
        loss_sum, seen, elapsed = 0.0, 0, 0.0
        for batch in batches(train_set, cfg.batch_size, shuffle=True, seed=cfg.seed + epoch):
            if result.steps >= total:
                break
            t0 = time.perf_counter()
            loss, _parts = model.compute_loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            elapsed += time.perf_counter() - t0
            result.steps += 1
            seen += len(batch)
            loss_sum += float(loss.detach()) * len(batch)
            bar.set_postfix(loss=f"{loss_sum / seen:.4f}", ex_s=f"{seen / elapsed:.1f}")
            bar.update(1)
        bar.close()
        if not seen:
            break
        seen_total += seen
        time_total += elapsed
        ep = EpochResult(epoch, loss_sum / seen, seen / elapsed if elapsed else 0.0)
        result.epochs.append(ep)
        msg = f"epoch {epoch}: train loss {ep.train_loss:.4f}, {ep.examples_per_s:.1f} examples/s"
        if eval_set:
            model.module.eval()
            ep.eval = score(eval_set, cfg.threshold, cfg.multi_label)
            msg += f", eval macro-F1 {ep.eval.macro_f1:.4f}, micro-F1 {ep.eval.micro_f1:.4f}"
            if not cfg.select_best:
                result.best_macro_f1, result.best_epoch = ep.eval.macro_f1, epoch
            elif result.best_macro_f1 is None or ep.eval.macro_f1 > result.best_macro_f1:
                result.best_macro_f1, result.best_epoch, bad_epochs = ep.eval.macro_f1, epoch, 0
                if output_dir is not None:
                    model.save(output_dir)
                    result.saved_to = str(output_dir)
                    msg += " (best, saved)"
            else:
                bad_epochs += 1
        log(msg)
        if eval_set and cfg.select_best and bad_epochs >= cfg.patience:
            result.stopped_early = epoch < cfg.epochs
            log(f"early stopping: no macro-F1 gain for {bad_epochs} epoch(s); best epoch {result.best_epoch}")
            break
        if result.steps >= total:
            break
    if output_dir is not None and (not eval_set or not cfg.select_best):
        model.save(output_dir)
        result.saved_to = str(output_dir)
    result.examples_per_s = seen_total / time_total if time_total else 0.0
    model.module.eval()
    return result
