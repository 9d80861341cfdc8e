"""Build the ONNX files of a BERT-family encoder: export (fp32) and dynamic int8 quantisation, cached.

The graph is our own padded BERT forward (same arithmetic as `fast_bert`, minus the packing), traced
with the TorchScript exporter (opset 14, dynamic batch and sequence axes), because tracing the
`transformers` module bakes its data-dependent mask handling into the graph. Inputs:
`inputs_embeds` (B, S, D) word embeddings (looked up in torch, so fused bi-encoders can replace
marker rows), `attention_mask` (B, S) int64, `keep` (B, P) int64 positions; output `hidden`
(B, P, D): the last layer computes queries and feed-forward at the `keep` positions only.

Files live under `<GLICLASS_CACHE>/onnx/`, named by a digest of the encoder's weights and config,
the exporter version, torch's version and the opset (int8 adds onnxruntime's version), so a changed
checkpoint or exporter gets a new build and nothing ever reads a stale file. Writes go to a
temporary file renamed into place, so concurrent first uses never see half a model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

log = logging.getLogger(__name__)

# Bump when the exported graph changes (the cache key includes it).
EXPORTER_VERSION = "1"
OPSET = 14
SMOOTH_ALPHA = 0.5
_LINEARS = ("qkv", "out", "up", "down")
# Linear layers an int8 build keeps in fp32: the feed-forward down-projection reads GELU's output,
# whose outliers dynamically quantised uint8 activations resolve worst. On the builtin model over 300
# held-out news rows (benchmarks/dtype_agreement.py), all four int8 moved top-1 decisions 4.0% of the
# time (single-label macro-F1 -0.016, multi-label -0.021); with "down" in fp32, 0.7% (+0.000 / -0.008);
# the last layer in fp32 instead did not help (3.7%).
INT8_KEEP_FP32 = ("down",)


class BertExport(nn.Module):
    """Export-friendly padded BERT forward over a `transformers` BertModel's weights."""

    positions: torch.Tensor
    type_row: torch.Tensor

    def __init__(self, model: Any) -> None:
        super().__init__()
        cfg = model.config
        emb = model.embeddings
        heads = int(cfg.num_attention_heads)
        self.register_buffer("positions", emb.position_embeddings.weight.detach().clone())
        self.register_buffer("type_row", emb.token_type_embeddings.weight[0].detach().clone())
        self.emb_ln = _norm(emb.LayerNorm)
        self.layers = nn.ModuleList(_Layer(layer, heads) for layer in model.encoder.layer)

    def smooth(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, alpha: float | None = None
    ) -> None:
        """SmoothQuant: move per-channel activation range into the weights before int8 quantisation.

        Dynamic quantisation gives each activation matrix one scale; a few BERT channels run far
        larger than the rest and take most of the int8 range. Each linear's input is divided per
        channel by s = amax(x)^alpha / amax(w)^(1 - alpha) (an elementwise Mul in the graph) and its
        weight rows multiplied by s: the same function in fp32, flatter activations for int8.
        Calibrated on `inputs_embeds` (real rows of the model's own inputs).
        """
        alpha = SMOOTH_ALPHA if alpha is None else alpha
        layers = [cast(_Layer, layer) for layer in self.layers]
        for layer in layers:
            layer.observed = {}
        keep = torch.arange(inputs_embeds.shape[1]).expand(inputs_embeds.shape[0], -1)
        with torch.no_grad():
            self(inputs_embeds, attention_mask, keep)
            for layer in layers:
                layer.apply_smoothing(alpha)

    def forward(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, keep: torch.Tensor
    ) -> torch.Tensor:
        seq = inputs_embeds.shape[1]
        x = self.emb_ln(inputs_embeds + self.type_row + self.positions[:seq])
        # Additive key mask; -1e4 underflows to exactly 0 after softmax in float32.
        bias = (1.0 - attention_mask.to(x.dtype)).unsqueeze(1).unsqueeze(2) * -10000.0
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x, bias, keep if i == last else None)
        return x


class _Layer(nn.Module):
    def __init__(self, layer: Any, heads: int) -> None:
        super().__init__()
        att = layer.attention.self
        # Python constants, so the graph computes no shapes or scales from tensor shapes.
        self.dim = int(att.query.weight.shape[0])
        self.heads = heads
        self.head_dim = self.dim // heads
        self.scale = 1.0 / self.head_dim**0.5
        # Pre-transposed and pre-fused, so every projection is a MatMul on an initializer (which is
        # what dynamic quantisation rewrites).
        w = torch.cat([att.query.weight, att.key.weight, att.value.weight], 0).detach()
        b = torch.cat([att.query.bias, att.key.bias, att.value.bias], 0).detach()
        self.qkv_w = nn.Parameter(w.t().contiguous(), requires_grad=False)
        self.qkv_b = nn.Parameter(b.clone(), requires_grad=False)
        self.out_w, self.out_b = _linear(layer.attention.output.dense)
        self.out_ln = _norm(layer.attention.output.LayerNorm)
        self.up_w, self.up_b = _linear(layer.intermediate.dense)
        self.act = layer.intermediate.intermediate_act_fn
        self.down_w, self.down_b = _linear(layer.output.dense)
        self.down_ln = _norm(layer.output.LayerNorm)
        # Per-input-channel divisors of each linear's input (SmoothQuant, int8 builds only).
        self.inv: dict[str, torch.Tensor] = {}
        self.observed: dict[str, torch.Tensor] | None = None

    def _in(self, name: str, x: torch.Tensor) -> torch.Tensor:
        if self.observed is not None:
            amax = x.detach().abs().reshape(-1, x.shape[-1]).amax(0)
            prev = self.observed.get(name)
            self.observed[name] = amax if prev is None else torch.maximum(prev, amax)
        inv = self.inv.get(name)
        return x if inv is None else x * inv

    def apply_smoothing(self, alpha: float) -> None:
        assert self.observed is not None
        for name in _LINEARS:
            w = getattr(self, f"{name}_w")
            s = (self.observed[name].clamp(min=1e-5) ** alpha) / (
                w.abs().amax(1).clamp(min=1e-5) ** (1 - alpha)
            )
            s = s.clamp(min=1e-5)
            w.data.mul_(s.unsqueeze(1))
            self.inv[name] = 1.0 / s
        self.observed = None

    def forward(self, x: torch.Tensor, bias: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        bsz, seq = x.shape[0], x.shape[1]
        dim, heads, hd = self.dim, self.heads, self.head_dim
        qkv = torch.matmul(self._in("qkv", x), self.qkv_w) + self.qkv_b
        q, k, v = qkv[..., :dim], qkv[..., dim : 2 * dim], qkv[..., 2 * dim :]
        residual = x
        if keep is not None:
            index = keep.unsqueeze(-1).expand(-1, -1, dim)
            q = torch.gather(q, 1, index)
            residual = torch.gather(x, 1, index)
        q = q.reshape(bsz, -1, heads, hd).transpose(1, 2)
        k = k.reshape(bsz, seq, heads, hd).permute(0, 2, 3, 1)
        v = v.reshape(bsz, seq, heads, hd).transpose(1, 2)
        scores = torch.matmul(q, k) * self.scale + bias
        ctx = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(bsz, -1, dim)
        h = self.out_ln(torch.matmul(self._in("out", ctx), self.out_w) + self.out_b + residual)
        inter = self.act(torch.matmul(self._in("up", h), self.up_w) + self.up_b)
        return self.down_ln(torch.matmul(self._in("down", inter), self.down_w) + self.down_b + h)  # type: ignore[no-any-return]


def _linear(layer: nn.Linear) -> tuple[nn.Parameter, nn.Parameter]:
    w = nn.Parameter(layer.weight.detach().t().contiguous(), requires_grad=False)
    return w, nn.Parameter(layer.bias.detach().clone(), requires_grad=False)


def _norm(ln: nn.LayerNorm) -> nn.LayerNorm:
    out = nn.LayerNorm(ln.normalized_shape, eps=ln.eps)
    out.load_state_dict(ln.state_dict())
    return out


def cache_dir() -> Path:
    """Where exported encoders are kept: beside the builtin models, under `<cache>/onnx`."""
    from gliclass_core.builtin import cache_root

    return cache_root() / "onnx"


def encoder_digest(model: Any, dtype: str, calibration: Calibration | None = None) -> str:
    """Cache key of `model`'s export at `dtype`: its weights and config plus the exporter's version.

    int8 adds onnxruntime's version (its quantiser) and the calibration rows.
    """
    h = hashlib.blake2b(digest_size=16)
    parts: dict[str, Any] = {"exporter": EXPORTER_VERSION, "opset": OPSET, "torch": torch.__version__}
    if dtype == "int8":
        import onnxruntime

        parts["onnxruntime"] = onnxruntime.__version__
        parts["smooth_alpha"] = SMOOTH_ALPHA
        parts["int8_keeps_fp32"] = INT8_KEEP_FP32
        if calibration is not None:
            h.update(calibration.input_ids.numpy().tobytes() + calibration.attention_mask.numpy().tobytes())
    cfg = getattr(model, "config", None)
    parts["config"] = cfg.to_dict() if cfg is not None and hasattr(cfg, "to_dict") else None
    parts["dtype"] = dtype
    h.update(json.dumps(parts, sort_keys=True, default=str).encode())
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


@dataclass(frozen=True)
class Calibration:
    """Padded rows of the model's own inputs, for int8 smoothing (see `BertExport.smooth`)."""

    input_ids: torch.Tensor  # (N, S) int64
    attention_mask: torch.Tensor  # (N, S) int64


def ensure_export(model: nn.Module, dtype: str, calibration: Calibration | None = None) -> tuple[Path, bool]:
    """Return the ONNX file for `model` at `dtype` ("float32" | "int8") and whether it was just built."""
    path = cache_dir() / f"encoder-{encoder_digest(model, dtype, calibration)}-{dtype}.onnx"
    if path.is_file():
        return path, False
    path.parent.mkdir(parents=True, exist_ok=True)
    if dtype == "int8":

        def build(tmp: Path) -> None:
            smoothed = tmp.with_suffix(".fp32.onnx")
            try:
                export_encoder(model, smoothed, calibration)
                _quantize(smoothed, tmp)
            finally:
                smoothed.unlink(missing_ok=True)

        _atomic(path, build)
    else:
        _atomic(path, lambda tmp: export_encoder(model, tmp))
    log.info("built %s", path)
    return path, True


def export_encoder(model: Any, out: Path, calibration: Calibration | None = None) -> None:
    """Trace `model` (a BertModel) into an ONNX file at `out` (fp32, dynamic batch/sequence/keep axes).

    With `calibration`, the graph is smoothed for int8 first (`BertExport.smooth`).
    """
    wrapper = BertExport(model).eval()
    if calibration is not None:
        with torch.no_grad():
            embeds = model.embeddings.word_embeddings(calibration.input_ids)
        wrapper.smooth(embeds, calibration.attention_mask)
    dim = int(model.config.hidden_size)
    embeds = torch.randn(2, 7, dim)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    keep = torch.tensor([[0, 2, 3], [0, 1, 4]])
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(
            wrapper,
            (embeds, mask, keep),
            str(out),
            input_names=["inputs_embeds", "attention_mask", "keep"],
            output_names=["hidden"],
            dynamic_axes={
                "inputs_embeds": {0: "batch", 1: "sequence"},
                "attention_mask": {0: "batch", 1: "sequence"},
                "keep": {0: "batch", 1: "kept"},
                "hidden": {0: "batch", 1: "kept"},
            },
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def _quantize(fp32: Path, out: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Linear layers only (every MatMul with a weight initializer) but those of INT8_KEEP_FP32;
    # attention's activation x activation products stay fp32. Signed int8 weights, per channel,
    # dynamically quantised uint8 activations.
    graph = onnx.load(str(fp32)).graph
    kept = {f"{name}_w" for name in INT8_KEEP_FP32}
    weights = {i.name for i in graph.initializer if i.name.rsplit(".", 1)[-1] in kept}
    exclude = [n.name for n in graph.node if n.op_type == "MatMul" and weights.intersection(n.input)]
    quantize_dynamic(str(fp32), str(out), op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8,
                     per_channel=True, nodes_to_exclude=exclude)  # fmt: skip


def _atomic(path: Path, write: Any) -> None:
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".onnx", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        tmp.chmod(0o644)  # mkstemp makes it private; the cache is read like any model file
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
