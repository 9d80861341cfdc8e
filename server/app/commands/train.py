"""`gliclass-stream train`: fine-tune a GLiClass or GliZNet model on JSON lines.

Start from an existing checkpoint (`--model builtin:minilm | DIR | hub id`) or from a plain
encoder directory (`--encoder DIR --arch uni-encoder|bi-encoder|gliznet`). Writes a checkpoint
to `--output` that `serve`/`classify --model` load directly, plus `train_report.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gliclass_core.errors import InvalidInput

if TYPE_CHECKING:
    from gliclass_core.training.trainer import Trainable

ARCHITECTURES = ("uni-encoder", "bi-encoder", "gliznet")
# Fewer held-out rows than this make per-epoch scores noise (one text is 1-10 points of macro-F1):
# no split is taken from --data, and the best epoch is not picked on them (the last one is kept).
MIN_SELECTION_ROWS = 100
DEFAULT_EVAL_SPLIT = 0.1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_argument_group("model")
    start = src.add_mutually_exclusive_group(required=True)
    start.add_argument("--model", help="checkpoint to fine-tune: builtin:minilm, a directory or a hub id")
    start.add_argument(
        "--encoder", help="plain HF encoder directory to start a new model from (needs --arch)"
    )
    src.add_argument("--arch", choices=ARCHITECTURES, help="architecture of a new model (with --encoder)")
    src.add_argument(
        "--pooling", default=None, help="GLiClass text pooling for a new model (default: first/avg)"
    )
    src.add_argument("--scorer", default="simple", help="GLiClass scorer for a new model (default: simple)")
    src.add_argument(
        "--label-pooling",
        choices=("mean", "lab"),
        default="mean",
        help="GliZNet label vector (default: mean)",
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data",
        required=True,
        help="training JSON lines {text, all_labels, true_labels}, or label descriptions "
        "{label, descriptions} (weak supervision)",
    )
    data.add_argument("--eval-data", help="evaluation JSON lines (default: --eval-split of --data)")
    data.add_argument(
        "--eval-split",
        type=float,
        default=None,
        help=f"fraction of --data held out when no --eval-data (default: {DEFAULT_EVAL_SPLIT} when that "
        f"gives at least {MIN_SELECTION_ROWS} rows, else none: all rows train)",
    )
    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--output", required=True, help="directory for the trained checkpoint")
    opt.add_argument("--epochs", type=int, default=3)
    opt.add_argument("--batch-size", type=int, default=8)
    opt.add_argument("--encoder-lr", type=float, default=2e-5, help="learning rate of the encoder(s)")
    opt.add_argument("--head-lr", type=float, default=1e-4, help="learning rate of projectors/scorer/scale")
    opt.add_argument("--weight-decay", type=float, default=0.01)
    opt.add_argument("--warmup-ratio", type=float, default=0.1)
    opt.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    opt.add_argument(
        "--patience", type=int, default=2, help="epochs without eval macro-F1 gain before stopping"
    )
    opt.add_argument(
        "--early-stopping",
        choices=("auto", "on", "off"),
        default="auto",
        help="keep the best epoch by eval macro-F1 and stop on --patience (auto: on when the eval set "
        f"has at least {MIN_SELECTION_ROWS} rows; off: run every epoch and keep the last)",
    )
    opt.add_argument("--freeze-encoder", action="store_true", help="train only the heads")
    opt.add_argument(
        "--freeze-embeddings", action="store_true", help="keep the encoders' embedding tables fixed (faster)"
    )
    opt.add_argument(
        "--focal-alpha",
        type=float,
        default=None,
        help="GLiClass focal alpha (-1: off; default 0.5, or -1 for relative-scoring models, e.g. builtin)",
    )
    opt.add_argument(
        "--focal-gamma",
        type=float,
        default=None,
        help="GLiClass focal gamma (-1: plain BCE; default 2, or -1 for relative-scoring models)",
    )
    opt.add_argument("--threshold", type=float, default=0.5, help="decision threshold for evaluation")
    opt.add_argument("--single-label", action="store_true", help="evaluate with argmax instead of threshold")
    opt.add_argument("--seed", type=int, default=0)
    opt.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    opt.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    opt.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _check(args: argparse.Namespace) -> None:
    if args.encoder and not args.arch:
        raise InvalidInput("--encoder needs --arch (uni-encoder, bi-encoder or gliznet)", field="arch")
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise InvalidInput("must be >= 1", field=name.replace("_", "-"))
    if args.eval_split is not None and not 0 <= args.eval_split < 1:
        raise InvalidInput("must be in [0, 1)", field="eval-split")


def build_model(args: argparse.Namespace) -> Trainable:
    """Load or create the Trainable the arguments ask for."""
    from gliclass_core.modeling.gliznet import GliZNet
    from gliclass_core.modeling.gliznet_format import is_gliznet_dir
    from gliclass_core.modeling.loading import resolve_source
    from gliclass_core.training.gliclass_init import new_gliclass
    from gliclass_core.training.gliclass_trainable import GLiClassTrainable
    from gliclass_core.training.gliznet_trainable import GliZNetTrainable

    if args.encoder:
        if args.arch == "gliznet":
            net = GliZNet.from_encoder(args.encoder, label_pooling=args.label_pooling)
            return GliZNetTrainable(net, seed=args.seed)
        pooling = args.pooling or ("avg" if args.arch == "bi-encoder" else "first")
        return new_gliclass(
            args.encoder, args.arch, pooling, args.scorer, alpha=args.focal_alpha, gamma=args.focal_gamma,
            seed=args.seed,
        )  # fmt: skip
    directory = resolve_source(args.model)
    if is_gliznet_dir(directory):
        if args.arch not in (None, "gliznet"):
            raise InvalidInput(f"{args.model} is a GliZNet checkpoint, not {args.arch}", field="arch")
        return GliZNetTrainable(GliZNet.from_pretrained(directory), seed=args.seed)
    model = GLiClassTrainable.from_pretrained(str(directory), args.focal_alpha, args.focal_gamma)
    if args.arch not in (None, model.cfg.architecture):
        raise InvalidInput(
            f"{args.model} is a {model.cfg.architecture} checkpoint, not {args.arch}", field="arch"
        )
    return model


def plan_evaluation(
    n_train: int, eval_split: float | None, eval_rows: int | None, early_stopping: str
) -> tuple[float, bool, str]:
    """Decide the split of --data, whether to pick the best epoch, and the line that says so.

    `eval_rows` is the size of --eval-data (None without one). Returns (split fraction,
    select best epoch, message).
    """
    fraction = 0.0
    if eval_rows is None:
        if eval_split is not None:
            fraction = eval_split
        elif round(n_train * DEFAULT_EVAL_SPLIT) >= MIN_SELECTION_ROWS:
            fraction = DEFAULT_EVAL_SPLIT
        held = max(1, round(n_train * fraction)) if fraction > 0 and n_train >= 2 else 0
    else:
        held = eval_rows
    if not held:
        reason = (
            "--eval-split 0"
            if eval_split == 0
            else (
                f"{n_train} examples are too few to hold {MIN_SELECTION_ROWS} out (--eval-split to force one)"
            )
        )
        return (
            0.0,
            False,
            (
                f"no evaluation set: {reason}; training every epoch on all examples and keeping the last "
                "(--eval-data scores a held-out set before and after)"
            ),
        )
    select = early_stopping == "on" or (early_stopping == "auto" and held >= MIN_SELECTION_ROWS)
    if select:
        return fraction, True, f"early stopping on {held} eval rows: the best epoch by macro-F1 is kept"
    why = (
        "--early-stopping off"
        if early_stopping == "off"
        else (
            f"{held} eval rows are too few to pick an epoch on (< {MIN_SELECTION_ROWS}; --early-stopping on "
            "to force it)"
        )
    )
    return fraction, False, f"no early stopping: {why}; every epoch runs and the last is kept"


def run(args: argparse.Namespace) -> int:
    import torch

    from gliclass_core.devices import resolve_device
    from gliclass_core.training.datasets import read_jsonl, split
    from gliclass_core.training.trainer import TrainConfig, train

    _check(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    train_set = read_jsonl(args.data)
    eval_set = read_jsonl(args.eval_data) if args.eval_data else []
    fraction, select_best, plan = plan_evaluation(
        len(train_set), args.eval_split, len(eval_set) if args.eval_data else None, args.early_stopping
    )
    if not args.eval_data:
        train_set, eval_set = split(train_set, fraction, args.seed)
    model = build_model(args)
    device = resolve_device(args.device)
    model.to(device)
    cfg = TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, encoder_lr=args.encoder_lr, head_lr=args.head_lr,
        weight_decay=args.weight_decay, warmup_ratio=args.warmup_ratio, patience=args.patience,
        select_best=select_best, threshold=args.threshold, multi_label=not args.single_label,
        seed=args.seed, max_steps=args.max_steps, freeze_encoder=args.freeze_encoder,
        freeze_embeddings=args.freeze_embeddings, progress=not args.no_progress,
    )  # fmt: skip
    print(
        f"training on {len(train_set)} examples, evaluating on {len(eval_set)}, device {device}",
        file=sys.stderr,
    )
    print(plan, file=sys.stderr)
    result = train(model, train_set, eval_set, cfg, output_dir=args.output)
    dropped = getattr(model, "dropped_labels", 0)
    if dropped:
        print(
            f"warning: {dropped} label slots did not fit max_length beside their text and were not trained",
            file=sys.stderr,
        )
    report = {
        "output": str(Path(args.output).resolve()),
        "train_examples": len(train_set),
        "eval_examples": len(eval_set),
        "steps": result.steps,
        "examples_per_s": round(result.examples_per_s, 2),
        "early_stopping": select_best,
        "best_epoch": result.best_epoch,
        "best_macro_f1": result.best_macro_f1,
        "eval_macro_f1_before": result.before.macro_f1 if result.before else None,
        "eval_macro_f1_after": result.final.macro_f1 if result.final else None,
        "stopped_early": result.stopped_early,
        "dropped_label_slots": dropped,
        "epochs": [
            {
                "epoch": e.epoch,
                "train_loss": e.train_loss,
                "examples_per_s": e.examples_per_s,
                "eval_macro_f1": e.eval.macro_f1 if e.eval else None,
                "eval_micro_f1": e.eval.micro_f1 if e.eval else None,
            }
            for e in result.epochs
        ],
    }
    if result.before is not None and result.final is not None:
        before, after = result.before.macro_f1, result.final.macro_f1
        print(
            f"eval macro-F1 {before:.4f} -> {after:.4f} ({after - before:+.4f}) on {len(eval_set)} rows "
            f"(epoch {result.best_epoch} saved)",
            file=sys.stderr,
        )
    (Path(args.output) / "train_report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report))
    return 0
