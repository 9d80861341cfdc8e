"""Opt-in CPU engine: the text encoder(s) run in ONNX Runtime, fp32 or dynamically quantised int8.

Only the encoder moves: word-embedding lookup, poolings, projectors, scorers and the bi-encoder
label cache stay in torch, so every head behaves as on the torch engine. The network calls the
engine through one seam (`GLiClassNetwork.encoder_engine` / `label_engine`, see heads.py).

Batches run padded, exactly as the scheduler and `classify` form them (length-sorted, and grouped
so that real tokens are >= 90% of the padded grid on CPU): no packing inside the graph, whose few
percent of padding is not worth the gathers. When the head reads only a few positions (first or
last token pooling, class-token "first"), the last layer computes only those, as on torch.

Each thread that runs a forward pass gets its own ONNX Runtime session (replica threads and the
offline `classify` caller never share one), with as many intra-op threads as torch has there
(`[model] cpu_threads` split over the replicas, as on torch).

Supported: BERT-family encoders (`model_type` bert with absolute positions), last-layer features,
every architecture `Classifier` runs (uni-encoder, bi-encoder, fused). Anything else is refused
with `UnsupportedModel` at load. On first build the engine's scores are compared with torch fp32 on
a fixed probe set (`AGREEMENT_PROBE`); the result is printed, kept beside the export, and an fp32
export that does not reproduce torch is refused.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from gliclass_core.devices import ONNX_DTYPES, dtype_name, engine_problem
from gliclass_core.errors import InvalidInput, UnsupportedModel
from gliclass_core.modeling.collate import pad_rows
from gliclass_core.modeling.onnx_export import Calibration, cache_dir, ensure_export
from gliclass_core.processing.packing import BiPayload
from gliclass_core.processing.tokens import LRUCache
from gliclass_core.types import ClassifyItem, Prediction, PreparedItem

log = logging.getLogger(__name__)

# An fp32 export must reproduce torch's probabilities this closely, or it is refused.
FP32_TOLERANCE = 1e-3


class EngineHost(Protocol):
    """What `attach` needs of a GLiClass `Classifier`: its network, packing and offline `classify`."""

    network: Any
    pad_id: int
    label_vectors: LRUCache
    label_cache_size: int

    def prepare(self, item: ClassifyItem, index: int | None = None) -> PreparedItem: ...

    def classify(self, texts: list[str], labels: list[str], *, batch_size: int) -> list[Prediction]: ...


def resolve_engine(engine: str | None, dtype: str | None, device: str) -> tuple[str, str | None]:
    """Validate engine, dtype and device (`devices.engine_problem`); return (engine, onnx dtype or None)."""
    name = (engine or "torch").lower()
    problem = engine_problem(name, dtype, device)
    if problem is not None:
        field, message = problem
        if field == "device":
            raise UnsupportedModel(f'{message}; use engine "torch"')
        raise InvalidInput(message, field=field)
    if name == "torch":
        return "torch", None
    onnx_dtype = ONNX_DTYPES[dtype_name(dtype) or "float32"]
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise UnsupportedModel(
            'engine "onnx" needs onnxruntime: pip install "gliclass-stream[onnx]"'
        ) from exc
    return "onnx", onnx_dtype


def check_supported(network: Any) -> None:
    """Raise UnsupportedModel unless every encoder of `network` can be exported."""
    from gliclass_core.modeling import fast_bert

    cfg = network.cfg
    if cfg.encoder_layer_id != -1:
        raise UnsupportedModel('engine "onnx" exports the last layer only (encoder_layer_id is set)')
    for option in ("use_segment_embeddings", "squeeze_layers", "use_lstm", "use_calibrator"):
        if getattr(cfg, option, False):
            raise UnsupportedModel(f'engine "onnx" does not support {option}; use engine "torch"')
    for attr in _encoders(network):
        module = getattr(network, attr)
        kind = getattr(getattr(module, "config", None), "model_type", None)
        if not fast_bert.supports(module) or getattr(module.config, "hidden_act", "gelu") not in _ACTS:
            raise UnsupportedModel(
                f'engine "onnx" exports BERT-family encoders (absolute positions); {attr} is'
                f' {kind!r}: use engine "torch"'
            )


_ACTS = ("gelu", "relu", "gelu_new", "gelu_pytorch_tanh", "silu", "swish")


def _encoders(network: Any) -> tuple[str, ...]:
    return ("encoder_model", "label_encoder") if network.cfg.is_bi_encoder else ("encoder_model",)


class OnnxEncoder:
    """Callable stand-in for an encoder's forward: (ids | embeds, mask, keep) -> last hidden state."""

    def __init__(self, module: Any, path: Path) -> None:
        self.path = path
        self.embedding = module.embeddings.word_embeddings
        self._local = threading.local()

    def __deepcopy__(self, memo: dict[int, Any]) -> OnnxEncoder:
        return self  # immutable file + per-thread sessions: copies of a network share it

    def session(self) -> Any:
        """This thread's ONNX Runtime session (created on first use, with torch's thread count)."""
        sess = getattr(self._local, "session", None)
        if sess is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = max(1, torch.get_num_threads())
            opts.inter_op_num_threads = 1
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            # Idle pool threads sleep instead of spinning: the cores are shared with tokenizing
            # threads, other replicas and other processes (measured faster here under load, int8 most).
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            sess = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
            self._local.session = sess
        return sess

    def __call__(
        self,
        input_ids: torch.Tensor | None,
        attention_mask: torch.Tensor,
        inputs_embeds: torch.Tensor | None = None,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Last hidden state (B, S, D); with `keep` (B, P), only those positions are filled."""
        if inputs_embeds is None:
            assert input_ids is not None
            inputs_embeds = self.embedding(input_ids)
        bsz, seq = attention_mask.shape
        lengths = attention_mask.sum(1).tolist()
        embeds = inputs_embeds.float()
        mask = attention_mask.to(torch.int64)
        full = embeds.new_zeros(bsz, seq, embeds.shape[-1])
        for rows, width in length_groups(lengths):
            index = torch.tensor(rows)
            positions = keep[index] if keep is not None else torch.arange(width).expand(len(rows), width)
            feed = {
                "inputs_embeds": embeds[index, :width].contiguous().numpy(),
                "attention_mask": mask[index, :width].contiguous().numpy(),
                "keep": positions.clamp(max=width - 1).to(torch.int64).contiguous().numpy(),
            }
            hidden = torch.from_numpy(self.session().run(["hidden"], feed)[0])
            full[index.unsqueeze(1), positions] = hidden
        return full


# Cost of one extra session run, in padded tokens (call overhead, smaller matrix products).
GROUP_CALL_TOKENS = 256


def length_groups(lengths: list[int]) -> list[tuple[list[int], int]]:
    """Split rows into runs of similar length: (row indices, padded width) minimising padded tokens.

    The graph runs padded; a batch spanning very different lengths (the offline `classify` over a
    mixed stream) is cheaper as a few runs than as one grid padded to its longest row. Exact DP
    over the rows sorted by length, each run costing rows x width + GROUP_CALL_TOKENS.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[j]: cost of the first j sorted rows
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        width = lengths[order[j - 1]]
        for i in range(j):
            cost = best[i] + (j - i) * width + GROUP_CALL_TOKENS
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups = []
    j = n
    while j > 0:
        i = cut[j]
        groups.append(([order[k] for k in range(i, j)], max(1, lengths[order[j - 1]])))
        j = i
    return groups[::-1]


@dataclass(frozen=True)
class Agreement:
    """The engine's scores against torch fp32 on the probe set."""

    dtype: str
    texts: int
    labels: int
    max_abs_diff: float
    top1_agreement: float

    def line(self) -> str:
        return (
            f"engine onnx {self.dtype} vs torch float32 on {self.texts} probe texts x {self.labels} labels:"
            f" max |delta score| {self.max_abs_diff:.2e}, top-1 agreement {self.top1_agreement:.3f}"
        )


def attach(clf: EngineHost, dtype: str) -> Agreement | None:
    """Build (or reuse) the exports of `clf`'s encoders and route its forward passes through them.

    Returns the probe agreement (measured and printed when an export was built, else read back).
    """
    network = clf.network
    check_supported(network)
    engines: dict[str, OnnxEncoder] = {}
    fresh = False
    calibration = _calibration(clf) if dtype == "int8" else {}
    for attr in _encoders(network):
        module = getattr(network, attr)
        # Bi-encoder label vectors are computed once per label and cached: their encoder stays fp32.
        own = "float32" if attr == "label_encoder" else dtype
        path, built = ensure_export(module, own, calibration.get(attr) if own == "int8" else None)
        fresh = fresh or built
        engines[attr] = OnnxEncoder(module, path)
    report_path = cache_dir() / ("agreement-" + "-".join(e.path.stem for e in engines.values()) + ".json")
    agreement = None if fresh else _read(report_path)
    if agreement is None:
        baseline = _probe(clf)
        _install(network, engines)
        agreement = _compare(_probe(clf), baseline, dtype)
        print(agreement.line(), file=sys.stderr, flush=True)
        log.info("%s", agreement.line())
        if dtype == "float32" and not agreement.max_abs_diff <= FP32_TOLERANCE:
            _install(network, {})
            raise UnsupportedModel(f'engine "onnx": the export does not reproduce torch ({agreement.line()})')
        _write(report_path, agreement)
    else:
        _install(network, engines)
    return agreement


def _calibration(clf: EngineHost) -> dict[str, Calibration]:
    """The probe set as each encoder sees it: packed text rows, and (bi-encoders) the label rows."""
    rows: list[Any] = []  # token-id rows (int64 arrays or tuples)
    label_rows: dict[str, tuple[int, ...]] = {}
    for text in probe_texts():
        for p in clf.prepare(ClassifyItem(text=text, labels=AGREEMENT_PROBE_LABELS)).passes:
            rows.append(p.input_ids)
            if isinstance(p.payload, BiPayload):
                label_rows.update(zip(p.payload.labels, p.payload.label_ids))
    out = {"encoder_model": _padded(rows, clf.pad_id)}
    if label_rows:
        out["label_encoder"] = _padded(list(label_rows.values()), clf.pad_id)
    return out


def _padded(rows: list[Any], pad_id: int) -> Calibration:
    ids, mask = pad_rows(rows, pad_id)
    return Calibration(ids, mask)


def _install(network: Any, engines: dict[str, OnnxEncoder]) -> None:
    network.encoder_engine = engines.get("encoder_model")
    network.label_engine = engines.get("label_encoder")


# A fixed probe: short and long texts over several topics, ten labels, deterministic.
AGREEMENT_PROBE_LABELS = (
    "billing", "bug report", "feature request", "account access", "delivery",
    "sports", "politics", "food and cooking", "travel", "science and technology",
)  # fmt: skip
_PROBE_SENTENCES = (
    "I was charged twice for my subscription this month and need a refund.",
    "The app crashes every time I open the settings screen on my phone.",
    "Could you add a dark mode and an option to export my data?",
    "I cannot log in: the password reset email never arrives.",
    "My package was marked delivered but nothing came to my door.",
    "The home team won the final after a late goal in extra time.",
    "Parliament voted on the new budget after a long debate.",
    "This bread recipe needs less yeast and a longer rise overnight.",
    "We booked a cheap flight and a small hotel near the beach.",
    "The rocket launch put a new telescope into orbit around the sun.",
    "The invoice lists a fee I never agreed to.",
    "Scientists measured the river's temperature over ten years.",
)


def probe_texts() -> list[str]:
    """The probe set: each sentence alone, and joined runs of 2-12 sentences (up to ~200 tokens)."""
    texts = list(_PROBE_SENTENCES)
    n = len(_PROBE_SENTENCES)
    for i in range(36):
        run = 2 + (i * 5) % 11
        texts.append(" ".join(_PROBE_SENTENCES[(i + j * 7) % n] for j in range(run)))
    return texts


def _probe(clf: EngineHost) -> np.ndarray:
    # Bi-encoder label vectors must come from the engine being probed: fresh caches before and after.
    clf.label_vectors = LRUCache(clf.label_cache_size)
    preds = clf.classify(probe_texts(), list(AGREEMENT_PROBE_LABELS), batch_size=16)
    clf.label_vectors = LRUCache(clf.label_cache_size)
    return np.array([[p.scores[label] for label in AGREEMENT_PROBE_LABELS] for p in preds])


def _compare(scores: np.ndarray, baseline: np.ndarray, dtype: str) -> Agreement:
    return Agreement(
        dtype=dtype,
        texts=int(scores.shape[0]),
        labels=int(scores.shape[1]),
        max_abs_diff=float(np.abs(scores - baseline).max()),
        top1_agreement=float(np.mean(scores.argmax(1) == baseline.argmax(1))),
    )


def _read(path: Path) -> Agreement | None:
    try:
        return Agreement(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _write(path: Path, agreement: Agreement) -> None:
    from dataclasses import asdict

    tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(asdict(agreement)))
    tmp.replace(path)
