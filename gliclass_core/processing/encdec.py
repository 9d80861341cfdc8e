"""Rows for T5-style encoder-decoder GLiClass models: the text and the label prompt as two sequences.

The reference pipeline tokenizes `text + examples` and `<<LABEL>>l1<<LABEL>>l2...<<SEP>>prompt`
separately, each with the tokenizer's own special tokens. The text is cut to `max_length`; a label
prompt that does not fit is refused (the reference would cut labels off silently).
"""

from __future__ import annotations

from dataclasses import dataclass

from gliclass_core.errors import InvalidInput
from gliclass_core.processing.packing import EXAMPLE, LABEL, SEP, Row, format_example
from gliclass_core.processing.tokens import PieceTokenizer
from gliclass_core.types import Example


@dataclass(frozen=True)
class EncDecPayload:
    """The label prompt's ids; the row's own ids are the text's."""

    class_ids: tuple[int, ...]


def encdec_row(
    pieces: PieceTokenizer,
    text: str,
    labels: tuple[str, ...],
    prompt: str | None,
    examples: tuple[Example, ...],
    max_length: int,
    index: int | None,
) -> Row:
    """The single row of an encoder-decoder item."""
    label_prompt = "".join(LABEL + label for label in labels) + SEP + (prompt or "")
    class_ids = pieces.plain(label_prompt)
    if len(class_ids) > max_length:
        raise InvalidInput(
            f"the labels and prompt need {len(class_ids)} tokens, more than the model's maximum of "
            f"{max_length}",
            field="labels",
            index=index,
        )
    if examples:
        text = text + "".join(EXAMPLE + format_example(e) for e in examples) + SEP
    ids = pieces.plain(text, cache=False)
    truncated = len(ids) > max_length
    if truncated:
        ids = ids[: max_length - len(pieces.suffix)] + pieces.suffix
    return Row(ids, len(labels), EncDecPayload(class_ids), truncated)  # type: ignore[arg-type]
