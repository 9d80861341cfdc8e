"""`GliZNetClassifier`: a GliZNet checkpoint behind the model contract (`gliclass_core.model.Model`).

The runtime, the gRPC and Kafka edges and `classify` serve it as they serve a GLiClass model.
GliZNet packs its own rows (`processing.gliznet_packing`), so its items are tokenized in `plan`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gliclass_core.devices import resolve_device, resolve_dtype
from gliclass_core.errors import InvalidInput
from gliclass_core.items import check_item_options
from gliclass_core.model import Model, model_info
from gliclass_core.modeling.gliznet import GliZNet
from gliclass_core.processing import predictions
from gliclass_core.processing.gliznet_packing import LAB_TOKEN
from gliclass_core.processing.long_text import prepare_chunked
from gliclass_core.processing.validation import validate_item
from gliclass_core.types import ClassifyItem, EncodedPass, ItemPlan, Prediction, PreparedItem


class GliZNetClassifier(Model):
    """A loaded GliZNet on one device, implementing the model contract."""

    def __init__(self, net: GliZNet, model_id: str, dtype: object) -> None:
        self.net = net
        self.model_id = model_id
        self.device = net.device
        self.dtype = dtype
        self.info = model_info(
            model_id, "gliznet", net.device, dtype, net.config.max_length,
            net.config.encoder_config.get("model_type"),
            label_pooling=net.config.label_pooling, similarity=net.config.similarity_metric,
        )  # fmt: skip

    @classmethod
    def load(
        cls, directory: str | Path, model_id: str, device: str = "auto", dtype: str | None = None
    ) -> GliZNetClassifier:
        """Load a GliZNet checkpoint directory onto `device` (auto: CUDA when present)."""
        dev = resolve_device(device)
        torch_dtype = resolve_dtype(dtype, dev)
        return cls(GliZNet.from_pretrained(directory, device=dev, dtype=torch_dtype), model_id, torch_dtype)

    def replicate(self, device: str) -> GliZNetClassifier:
        """Return a copy on `device`, sharing the tokenizer."""
        dev = resolve_device(device)
        model = self.net.model if dev == self.device else copy.deepcopy(self.net.model)
        return GliZNetClassifier(GliZNet(model, self.net.tokenizer, dev), self.model_id, self.dtype)

    def plan(self, item: ClassifyItem, index: int | None = None) -> ItemPlan:
        """Validate and pack one item now (labels that do not fit one pass go to further passes)."""
        return ItemPlan(item, (), prepared=self._pack(item, index))

    def encode(self, plans: Sequence[ItemPlan]) -> list[PreparedItem]:
        """The items `plan` packed (GliZNet tokenizes in `plan`)."""
        out = []
        for plan in plans:
            if plan.prepared is None:
                raise ValueError("a GliZNet plan carries its packed item")
            out.append(plan.prepared)
        return out

    def _pack(self, item: ClassifyItem, index: int | None) -> PreparedItem:
        validate_item(item, index)
        check_item_options(item, index)
        if item.long_text.mode == "chunk":
            return prepare_chunked(self.prepare, item, index)
        if item.examples:
            raise InvalidInput(
                "in-context examples are not supported by GliZNet models", field="examples", index=index
            )
        # [LAB] in the input would be read as a label boundary.
        for name, values in (("text", [item.text]), ("labels", item.labels), ("prompt", [item.prompt or ""])):
            if any(LAB_TOKEN in v for v in values):
                raise InvalidInput(
                    f"must not contain the reserved marker {LAB_TOKEN}", field=name, index=index
                )
        try:
            packed = self.net.pack(item.text, list(item.labels), item.prompt)
        except InvalidInput as exc:
            raise InvalidInput(exc.bare_message, field=exc.field, index=index) from exc
        passes = tuple(EncodedPass(p.input_ids, p.num_labels, p) for p in packed)
        return PreparedItem(item=item, passes=passes, truncated=any(p.truncated for p in packed))

    def forward(self, passes: Sequence[EncodedPass]) -> list[np.ndarray]:
        """One padded forward pass; float32 logits per pass."""
        return self.net.forward([p.payload for p in passes])

    def finish(self, prepared: PreparedItem, logits: Sequence[np.ndarray]) -> Prediction:
        """Turn the logits of an item's passes into scores and predicted labels."""
        return predictions.finish(prepared, logits)

    def finish_many(
        self, prepared: Sequence[PreparedItem], logits: Sequence[Sequence[np.ndarray]]
    ) -> list[Prediction | Exception]:
        """`finish` for many items, vectorised per label count and mode."""
        return predictions.finish_many(prepared, logits)
