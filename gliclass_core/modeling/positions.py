"""How many token positions an encoder can take (its config's limit, less any reserved offset)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# These reserve the first positions for padding offsets: ids start at padding_idx + 1.
OFFSET_POSITION_MODELS = ("roberta", "xlm-roberta", "camembert")


def usable_positions(encoder_config: Mapping[str, Any]) -> int | None:
    """Token positions a row may fill: `max_position_embeddings`, minus 2 for RoBERTa-family encoders.

    None when the config gives no positive limit.
    """
    limit = encoder_config.get("max_position_embeddings")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        return None
    if encoder_config.get("model_type") in OFFSET_POSITION_MODELS:
        limit -= 2
    return limit
