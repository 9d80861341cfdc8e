"""Routes: which labels an event is scored against, and with which decision settings.

The event and its route are decoded into one `ItemRequest` and resolved by the core's one request
resolver (`gliclass_core.service.request`), as gRPC and HTTP items are: the event's own `labels`
or `label_set`, else the route's; the route's settings (threshold, multi_label, top_k, long_text)
over the label set's. A resolver refusal becomes a BadEvent whose reason names the problem.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from gliclass_core.config import LabelSet
from gliclass_core.errors import InvalidInput
from gliclass_core.processing.validation import MAX_LABELS
from gliclass_core.service.request import ItemRequest, RequestLimits, resolve_item
from gliclass_core.types import ClassifyItem
from worker.codec import MAX_VALUE_BYTES, BadEvent, Event
from worker.config import Route

#: An event is one item; its text and labels are bounded by the codec (value size, label bytes).
EVENT_LIMITS = RequestLimits(
    max_items_per_request=1, max_text_chars=MAX_VALUE_BYTES, max_labels_per_item=MAX_LABELS
)


@dataclass(frozen=True)
class Resolved:
    """A classifiable item and the label-set name reported in the output (None for inline labels)."""

    item: ClassifyItem
    label_set: str | None


def event_request(event: Event, route: Route) -> ItemRequest:
    """The resolver's request for `event` on `route` (the route's over-length rule applied first).

    Raises BadEvent for a text over the route's `max_text_chars` when the route rejects those.
    """
    text = event.text
    if route.max_text_chars is not None and len(text) > route.max_text_chars:
        if route.over_length == "reject":
            raise BadEvent(
                "text_too_long", f"text has {len(text)} characters, the route allows {route.max_text_chars}"
            )
        text = text[: route.max_text_chars]
    base = ItemRequest(
        text=text,
        threshold=route.threshold,
        multi_label=route.multi_label,
        top_k=route.top_k,
        long_text=route.long_text,
        return_hierarchical=route.return_hierarchical,
    )
    if event.labels is not None:
        separator = route.label_separator if event.label_tree is not None else None
        return replace(
            base, labels=tuple(event.labels), label_nodes=event.label_tree, label_separator=separator
        )
    if event.label_set is not None:
        return replace(base, label_set=event.label_set)
    if route.labels is not None:
        return replace(base, labels=route.labels, label_nodes=route.label_tree)
    return replace(base, label_set=route.label_set)


def resolve(event: Event, route: Route, label_sets: Mapping[str, LabelSet]) -> Resolved:
    """Build the item for `event` on `route`: labels from the event, else its label set, else the route's.

    Raises BadEvent for an unknown label set, no labels at all, or over-long text the route rejects.
    """
    request = event_request(event, route)
    defaults = label_sets.get(route.label_set) if route.label_set is not None else None
    try:
        item = resolve_item(request, label_sets, EVENT_LIMITS, defaults=defaults)
    except InvalidInput as exc:
        raise _bad_event(exc, request) from exc
    return Resolved(item=item, label_set=request.label_set)


def _bad_event(exc: InvalidInput, request: ItemRequest) -> BadEvent:
    if exc.field == "label_set" and request.label_set is not None and not request.labels:
        return BadEvent("unknown_label_set", f"label set {request.label_set!r} is not configured")
    if exc.field == "labels" and not request.labels and request.label_set is None:
        return BadEvent("missing_labels", "event has no labels or label_set, and its route has none")
    if exc.field in ("labels", "label_tree", "label_set"):
        return BadEvent("invalid_labels", exc.bare_message)
    return BadEvent("invalid_input", f"{exc.field}: {exc.bare_message}" if exc.field else exc.bare_message)
