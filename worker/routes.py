"""Routes: which labels an event is scored against, and with which decision settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gliclass_core.config import LabelSet
from gliclass_core.label_sets import item_settings
from gliclass_core.processing.hierarchy import DEFAULT_SEPARATOR, flatten, with_separator
from gliclass_core.types import ClassifyItem
from worker.codec import BadEvent, Event
from worker.config import Route


@dataclass(frozen=True)
class Resolved:
    """A classifiable item and the label-set name reported in the output (None for inline labels)."""

    item: ClassifyItem
    label_set: str | None


def resolve(event: Event, route: Route, label_sets: Mapping[str, LabelSet]) -> Resolved:
    """Build the item for `event` on `route`: labels from the event, else its label set, else the route's.

    Raises BadEvent for an unknown label set, no labels at all, or over-long text the route rejects.
    """
    text = event.text
    if route.max_text_chars is not None and len(text) > route.max_text_chars:
        if route.over_length == "reject":
            raise BadEvent(
                "text_too_long", f"text has {len(text)} characters, the route allows {route.max_text_chars}"
            )
        text = text[: route.max_text_chars]
    set_name = event.label_set if event.label_set is not None else route.label_set
    label_set: LabelSet | None = None
    if set_name is not None:
        label_set = label_sets.get(set_name)
        if label_set is None:
            raise BadEvent("unknown_label_set", f"label set {set_name!r} is not configured")
    if event.labels is not None:
        labels, name, tree = event.labels, None, event.label_tree
        if tree is not None and route.label_separator != DEFAULT_SEPARATOR:
            tree = with_separator(tree, route.label_separator)
            labels = flatten(tree)
    elif event.label_set is not None and label_set is not None:
        labels, name, tree = label_set.labels, set_name, label_set.label_tree
    elif route.labels is not None:
        labels, name, tree = route.labels, None, route.label_tree
    elif label_set is not None:
        labels, name, tree = label_set.labels, set_name, label_set.label_tree
    else:
        raise BadEvent("missing_labels", "event has no labels or label_set, and its route has none")
    settings = item_settings(
        label_set,
        threshold=route.threshold,
        multi_label=route.multi_label,
        top_k=route.top_k,
        long_text=route.long_text,
        return_hierarchical=route.return_hierarchical,
    )
    return Resolved(item=settings.item(text, tuple(labels), tree), label_set=name)
