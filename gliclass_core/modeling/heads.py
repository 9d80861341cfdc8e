"""The GLiClass network: backbone(s), projectors, scorer; forward passes for each architecture.

Parameter names mirror the checkpoint keys under `model.` so a state dict loads by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from gliclass_core.modeling import fast_bert
from gliclass_core.modeling.calibrator import Calibrator
from gliclass_core.modeling.config import GLiClassConfig
from gliclass_core.modeling.encoder import build_encoder, build_encoder_decoder
from gliclass_core.modeling.poolings import pool
from gliclass_core.modeling.scorers import build_scorer

EPS = 1e-8


class Projector(nn.Module):
    """Linear -> activation -> Linear (dropout is an inference no-op)."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, act: str) -> None:
        super().__init__()
        from transformers.activations import ACT2FN

        self.linear_1 = nn.Linear(d_in, d_hidden)
        self.act = ACT2FN[act]
        self.linear_2 = nn.Linear(d_hidden, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


@dataclass
class Scored:
    """Logits with the text and label vectors they came from (what a calibrator reads)."""

    logits: torch.Tensor  # (B, K)
    text: torch.Tensor  # (B, D)
    labels: torch.Tensor  # (B, K, D)


class BiLSTM(nn.Module):
    """Bidirectional LSTM over each row's left-aligned token states (packed, so padding is skipped)."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(size, size // 2, batch_first=True, bidirectional=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

        lengths = mask.sum(dim=1).clamp_min(1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True)
        positions = torch.arange(out.shape[1], device=x.device).unsqueeze(0)
        return out, positions < lengths.to(x.device).unsqueeze(1)


@dataclass
class MarkerBatch:
    """Tensors describing label markers in a padded batch (uni-encoder and fused)."""

    markers: torch.Tensor  # (B, K) positions of each row's <<LABEL>> tokens (0 in empty slots)
    label_mask: torch.Tensor  # (B, K) true for real label slots
    first_sep: torch.Tensor  # (B,) position of the first <<SEP>>
    lengths: torch.Tensor  # (B,) real tokens per row


class GLiClassNetwork(nn.Module):
    """All GLiClass parameters; `uni_logits` / `bi_logits` / `fused_logits` run one padded batch."""

    def __init__(self, cfg: GLiClassConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d_enc = int(cfg.encoder_config.get("hidden_size") or cfg.encoder_config["d_model"])
        if cfg.is_encoder_decoder:
            self.encoder_decoder_model: Any = build_encoder_decoder(cfg.encoder_config)
        else:
            self.encoder_model: Any = build_encoder(cfg.encoder_config)
        self.text_projector = Projector(d_enc, cfg.hidden_size, d_enc, cfg.projector_act)
        self.classes_projector = Projector(d_enc, cfg.hidden_size, d_enc, cfg.projector_act)
        self.scorer = build_scorer(
            cfg.scorer, cfg.hidden_size, cfg.scorer_num_heads, cfg.scorer_mlp_hidden_size
        )
        self.logit_scale = nn.Parameter(torch.tensor(1.0))
        if cfg.use_lstm:
            self.lstm = BiLSTM(cfg.hidden_size)
        if cfg.use_segment_embeddings:
            self.segment_embeddings = nn.Embedding(3, d_enc)  # label / text / example segments
        # Weights the reference saves for this config but never reads at inference.
        raw = cfg.raw
        unused = ["layer_wise_attention."] if raw.get("squeeze_layers") else []
        if raw.get("use_lstm") and not cfg.use_lstm:
            unused.append("lstm.")
        self.unused_weights = tuple(unused)
        self.calibrator: Calibrator | None = None
        if cfg.use_calibrator:
            self.calibrator = Calibrator(
                d_enc, cfg.calibrator_hidden_size, cfg.calibrator_beta_max, cfg.calibrator_use_bias
            )
        # Packed, padding-free inference for BERT encoders (modeling/fast_bert.py); off: HF forward.
        self.use_fast_path = True
        # Opt-in inference engines for the encoders (modeling/onnx_engine.py); None: torch.
        self.encoder_engine: Any = None
        self.label_engine: Any = None
        if cfg.is_bi_encoder:
            assert cfg.label_model_config is not None
            d_lab = int(cfg.label_model_config["hidden_size"])
            self.label_encoder = build_encoder(cfg.label_model_config)
            self.biencoder_projector = Projector(d_lab, cfg.hidden_size, d_enc, cfg.projector_act)

    # -- shared pieces ---------------------------------------------------------------------------
    def hidden_states(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        inputs_embeds: torch.Tensor | None = None,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Last hidden state (or the configured layer) of the text encoder.

        `keep` (B, P): the only positions the caller will read; the fast path may skip the others.
        """
        layer = self.cfg.encoder_layer_id
        if self.encoder_engine is not None:
            return self.encoder_engine(input_ids, attention_mask, inputs_embeds, keep)  # type: ignore[no-any-return]
        if self._fast(self.encoder_model) and layer == -1:
            return fast_bert.bert_forward(self.encoder_model, input_ids, attention_mask, inputs_embeds, keep)
        kwargs = {"output_hidden_states": True} if layer != -1 else {}
        if inputs_embeds is not None:
            out = self.encoder_model(inputs_embeds=inputs_embeds, attention_mask=attention_mask, **kwargs)
        else:
            out = self.encoder_model(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        return out.hidden_states[layer] if layer != -1 else out[0]

    def _fast(self, module: nn.Module) -> bool:
        # Inference only: the fast path is not meant for autograd.
        return (
            self.use_fast_path
            and not self.training
            and not torch.is_grad_enabled()
            and fast_bert.supports(module)
        )

    def label_vectors(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Bi-encoder label vectors (N, D) for N tokenized labels, before any text is seen."""
        if self.label_engine is not None:
            hidden = self.label_engine(input_ids, attention_mask)
        elif self._fast(self.label_encoder):
            hidden = fast_bert.bert_forward(self.label_encoder, input_ids, attention_mask)
        else:
            hidden = self.label_encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
        vectors = pool(hidden, attention_mask.bool(), self.cfg.pooling)
        vectors = self.classes_projector(self.biencoder_projector(vectors))
        if self.cfg.normalize_features:
            vectors = nn.functional.normalize(vectors, p=2, dim=-1, eps=EPS)
        return vectors

    def _bi_text(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        text = self.text_projector(pool(hidden, attention_mask.bool(), self.cfg.pooling))
        if self.cfg.normalize_features:
            text = nn.functional.normalize(text, p=2, dim=-1, eps=EPS)
        return text

    # -- architectures ---------------------------------------------------------------------------
    def uni_logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, mb: MarkerBatch
    ) -> torch.Tensor:
        """Uni-encoder logits (B, K)."""
        return self.uni_scored(input_ids, attention_mask, mb).logits

    def uni_scored(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, mb: MarkerBatch) -> Scored:
        """Uni-encoder logits (B, K) with the text and label vectors behind them."""
        cfg = self.cfg
        shift = 0 if cfg.embed_class_token else 1
        keep = None
        if (
            cfg.class_token_pooling == "first"
            and cfg.pooling in ("first", "last")
            and not cfg.extract_text_features
            and not cfg.use_lstm
        ):
            # Only the text position and the label positions are read from the last layer.
            text_pos = (mb.lengths - 1) if cfg.pooling == "last" else torch.zeros_like(mb.lengths)
            label_pos = (mb.markers + shift).clamp(max=input_ids.shape[1] - 1)
            keep = torch.cat([text_pos.unsqueeze(1), label_pos], dim=1)
        embeds = None
        if cfg.use_segment_embeddings:
            embeds = self.encoder_model.get_input_embeddings()(input_ids)
            embeds = embeds + self.segment_embeddings(self._segment_ids(input_ids)).to(embeds.dtype)
        hidden = self.hidden_states(input_ids, attention_mask, inputs_embeds=embeds, keep=keep)
        bsz, seq, _ = hidden.shape
        rows = torch.arange(bsz, device=hidden.device).unsqueeze(1)
        labels = self._label_states(hidden, mb)
        if cfg.extract_text_features:
            # The reference shifts the tokens from the first <<SEP>> on to the row start and pools
            # the row's full length, the vacated tail counting as zeros; we reproduce that per row.
            src = mb.first_sep.unsqueeze(1) + torch.arange(seq, device=hidden.device).unsqueeze(0)
            token_mask = src < mb.lengths.unsqueeze(1)
            tokens = hidden[rows, src.clamp(max=seq - 1)] * token_mask.unsqueeze(-1).to(hidden.dtype)
            pool_mask = torch.arange(seq, device=hidden.device).unsqueeze(0) < mb.lengths.unsqueeze(1)
        else:
            tokens, token_mask = hidden, attention_mask.bool()
            pool_mask = token_mask
        if cfg.use_lstm:
            # The reference runs the LSTM packed over each row's text tokens and pools its output,
            # which (at batch size 1) holds exactly those tokens.
            tokens, token_mask = self.lstm(tokens, token_mask)
            pool_mask = token_mask
        labels = self.classes_projector(labels)
        if cfg.normalize_features:
            labels = labels / (labels.norm(p=2, dim=-1, keepdim=True) + EPS)
        if cfg.pooling == "pass":  # cross-attn: every text token, projected, is a key/value
            text = self.text_projector(tokens)
            if cfg.normalize_features:
                text = text / (text.norm(p=2, dim=-1, keepdim=True) + EPS)
            logits = self.scorer(text, labels, mb.label_mask, token_mask)
        else:
            text = self.text_projector(pool(tokens, pool_mask, cfg.pooling))
            if cfg.normalize_features:
                text = text / (text.norm(p=2, dim=-1, keepdim=True) + EPS)
            logits = self.scorer(text, labels, mb.label_mask)
        if cfg.normalize_features:
            logits = logits * self.logit_scale
        return Scored(logits, text, labels)

    def encdec_scored(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        class_ids: torch.Tensor,
        class_mask: torch.Tensor,
        mb: MarkerBatch,
    ) -> Scored:
        """Encoder-decoder logits: text and label prompt ("class ids", markers in `mb`) as two sequences.

        encoder-decoder: text through the encoder, label prompt through the decoder with full
        (bidirectional) self-attention over its real tokens; the text vector pools the encoder states.
        encoder-decoder-cls: label prompt through the encoder, text through the (causal) decoder; the
        text vector is the decoder state at the text's last token.
        """
        cfg = self.cfg
        model = self.encoder_decoder_model
        if cfg.architecture == "encoder-decoder":
            dtype = next(model.parameters()).dtype
            pad = (1.0 - class_mask.to(dtype))[:, None, None, :] * torch.finfo(dtype).min
            seq = class_ids.shape[1]
            out = model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                decoder_input_ids=class_ids,
                decoder_attention_mask=pad.expand(class_ids.shape[0], 1, seq, seq),
            )
            labels = self._label_states(out.last_hidden_state, mb)
            text = pool(out.encoder_last_hidden_state, attention_mask.bool(), cfg.pooling)
        else:
            out = model(
                input_ids=class_ids,
                attention_mask=class_mask,
                decoder_input_ids=input_ids,
                decoder_attention_mask=attention_mask,
            )
            labels = self._label_states(out.encoder_last_hidden_state, mb)
            rows = torch.arange(input_ids.shape[0], device=input_ids.device)
            text = out.last_hidden_state[rows, attention_mask.sum(dim=1) - 1]
        text = self.text_projector(text)
        labels = self.classes_projector(labels)
        if cfg.normalize_features:
            text = nn.functional.normalize(text, p=2, dim=-1, eps=EPS)
            labels = nn.functional.normalize(labels, p=2, dim=-1, eps=EPS)
        logits = self.scorer(text, labels, mb.label_mask)
        if cfg.normalize_features:
            logits = logits * self.logit_scale
        return Scored(logits, text, labels)

    def _label_states(self, hidden: torch.Tensor, mb: MarkerBatch) -> torch.Tensor:
        """Label vectors (B, K, D) read from `hidden` at the markers of `mb` (class-token pooling)."""
        cfg = self.cfg
        shift = 0 if cfg.embed_class_token else 1
        bsz, seq, _ = hidden.shape
        if cfg.class_token_pooling == "first":
            rows = torch.arange(bsz, device=hidden.device).unsqueeze(1)
            return hidden[rows, (mb.markers + shift).clamp(max=seq - 1)]
        # A label's span runs from its marker to the next marker; the last one to the first
        # <<SEP>> (extract_text_features) or to the row's end, exactly as the reference counts it.
        last_end = mb.first_sep if cfg.extract_text_features else mb.lengths
        ends = torch.cat([mb.markers[:, 1:], mb.markers.new_zeros(bsz, 1)], dim=1)
        count = mb.label_mask.sum(dim=1)
        slot = torch.arange(mb.markers.shape[1], device=hidden.device).unsqueeze(0)
        ends = torch.where(slot == (count - 1).unsqueeze(1), last_end.unsqueeze(1), ends)
        pos = torch.arange(seq, device=hidden.device).view(1, 1, seq)
        span = (pos >= (mb.markers + shift).unsqueeze(-1)) & (pos < ends.unsqueeze(-1))
        spanf = (span & mb.label_mask.unsqueeze(-1)).to(hidden.dtype)
        return torch.einsum("bks,bsd->bkd", spanf, hidden) / spanf.sum(-1, keepdim=True).clamp(min=1)

    def _segment_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Segments as the reference assigns them: 1 from the first <<SEP>> on, 0 before it; a row
        holding <<EXAMPLE>> markers gets 2 from its first non-example token on (in practice all of it).
        """
        cfg = self.cfg
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        text_start = (input_ids == cfg.text_token_index).int().argmax(dim=1, keepdim=True)
        is_example = input_ids == cfg.example_token_index
        example_start = (~is_example).int().argmax(dim=1, keepdim=True)
        segments = (positions >= text_start).long()
        in_examples = is_example.any(dim=1, keepdim=True) & (positions >= example_start)
        return torch.where(in_examples, torch.full_like(segments, 2), segments)

    def bi_logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        label_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Bi-encoder logits (B, K) from text ids and precomputed label vectors (B, K, D)."""
        return self.bi_scored(input_ids, attention_mask, labels, label_mask).logits

    def bi_scored(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        label_mask: torch.Tensor,
    ) -> Scored:
        """Bi-encoder logits with the text and label vectors behind them."""
        hidden = self.hidden_states(input_ids, attention_mask)
        text = self._bi_text(hidden, attention_mask)
        return Scored(self.scorer(text, labels, label_mask) * self.logit_scale, text, labels)

    def fused_logits(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        mb: MarkerBatch,
    ) -> torch.Tensor:
        """Fused bi-encoder: label vectors replace the <<LABEL>> embeddings; scores read them back."""
        return self.fused_scored(input_ids, attention_mask, labels, mb).logits

    def fused_scored(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: torch.Tensor,
        mb: MarkerBatch,
    ) -> Scored:
        """Fused bi-encoder logits with the text vectors and the label states read back."""
        embedding = self.encoder_model.get_input_embeddings()
        embeds = embedding(input_ids)
        rows, slots = mb.label_mask.nonzero(as_tuple=True)
        positions = mb.markers[rows, slots]
        embeds = embeds.index_put((rows, positions), labels[rows, slots].to(embeds.dtype))
        hidden = self.hidden_states(input_ids, attention_mask, inputs_embeds=embeds)
        text = self._bi_text(hidden, attention_mask)
        bsz = hidden.shape[0]
        post = hidden[torch.arange(bsz, device=hidden.device).unsqueeze(1), mb.markers]
        post = post * mb.label_mask.unsqueeze(-1).to(post.dtype)
        return Scored(self.scorer(text, post, mb.label_mask) * self.logit_scale, text, post)
