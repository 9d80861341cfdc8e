"""Hierarchical labels: a nested mapping flattened with a separator, and scores nested back.

Same shapes as the reference (gliclass 0.1.21 `flatten_hierarchical_labels` /
`build_hierarchical_output`):

    {"sentiment": ["positive", "negative"], "topic": {"product": ["price", "quality"]}}
    -> labels "sentiment.positive", "sentiment.negative", "topic.product.price", "topic.product.quality"
    -> hierarchy {"sentiment": {"positive": 0.9, "negative": 0.1},
                  "topic": {"product": {"price": 0.2, "quality": 0.7}}}

A mapping's value is a list of labels, a nested mapping, or one label (a string). A flat list of
labels stays as it is, and its hierarchical result is `{label: score}`. Depth and size are bounded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gliclass_core.errors import InvalidInput
from gliclass_core.types import ClassifyItem, LabelNode

DEFAULT_SEPARATOR = "."
MAX_DEPTH = 16
MAX_NODES = 5000


class _Budget:
    def __init__(self) -> None:
        self.nodes = 0

    def take(self, field: str, index: int | None) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise InvalidInput(f"more than {MAX_NODES} labels and groups", field=field, index=index)


def _name(value: object, what: str, field: str, index: int | None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{what} {value!r} is not a non-empty string", field=field, index=index)
    return value


def tree_from_labels(
    labels: Mapping[str, Any] | Sequence[Any],
    separator: str = DEFAULT_SEPARATOR,
    field: str = "labels",
    index: int | None = None,
) -> tuple[LabelNode, ...]:
    """Turn the reference's label structure (nested mapping, list, string leaves) into a label tree."""
    if not isinstance(separator, str) or not separator:
        raise InvalidInput("must be a non-empty string", field="label_separator", index=index)
    budget = _Budget()

    def build(value: object, prefix: str, depth: int) -> tuple[LabelNode, ...]:
        if depth > MAX_DEPTH:
            raise InvalidInput(f"nested deeper than {MAX_DEPTH} levels", field=field, index=index)
        if isinstance(value, str):
            value = [value]
        if isinstance(value, Mapping):
            if not value:
                raise InvalidInput(f"group {prefix or '(top)'!r} has no labels", field=field, index=index)
            nodes = []
            for key, child in value.items():
                budget.take(field, index)
                name = _name(key, "group name", field, index)
                path = f"{prefix}{separator}{name}" if prefix else name
                nodes.append(LabelNode(name=name, children=build(child, path, depth + 1)))
            return tuple(nodes)
        if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
            if not value:
                raise InvalidInput(f"group {prefix or '(top)'!r} has no labels", field=field, index=index)
            leaves = []
            for label in value:
                budget.take(field, index)
                name = _name(label, "label", field, index)
                leaves.append(LabelNode(name=name, label=f"{prefix}{separator}{name}" if prefix else name))
            return tuple(leaves)
        raise InvalidInput(
            f"expected a list of labels or a mapping of groups, got {type(value).__name__}",
            field=field,
            index=index,
        )

    return build(labels, "", 0)


def tree_from_nodes(
    nodes: Sequence[tuple[str, Sequence[Any]]],
    separator: str = DEFAULT_SEPARATOR,
    field: str = "label_tree",
    index: int | None = None,
) -> tuple[LabelNode, ...]:
    """Build a tree from (name, children) pairs, as the gRPC `LabelNode` messages carry it.

    A node without children is a label; one with children is a group. Groups and labels may sit
    side by side at one level.
    """
    if not isinstance(separator, str) or not separator:
        raise InvalidInput("must be a non-empty string", field="label_separator", index=index)
    budget = _Budget()

    def build(level: Sequence[tuple[str, Sequence[Any]]], prefix: str, depth: int) -> tuple[LabelNode, ...]:
        if depth > MAX_DEPTH:
            raise InvalidInput(f"nested deeper than {MAX_DEPTH} levels", field=field, index=index)
        out = []
        for name, children in level:
            budget.take(field, index)
            name = _name(name, "label or group name", field, index)
            path = f"{prefix}{separator}{name}" if prefix else name
            if children:
                out.append(LabelNode(name=name, children=build(children, path, depth + 1)))
            else:
                out.append(LabelNode(name=name, label=path))
        return tuple(out)

    if not nodes:
        raise InvalidInput("has no labels", field=field, index=index)
    return build(nodes, "", 0)


def flatten(tree: Sequence[LabelNode]) -> tuple[str, ...]:
    """The tree's labels, flattened, in depth-first order (the order they are scored in)."""
    out: list[str] = []

    def walk(nodes: Sequence[LabelNode]) -> None:
        for node in nodes:
            if node.children:
                walk(node.children)
            else:
                out.append(node.label)

    walk(tree)
    return tuple(out)


def hierarchy_of(tree: Sequence[LabelNode] | None, scores: Mapping[str, float]) -> dict[str, Any]:
    """Scores nested like the tree (`{group: {label: score}}`); flat labels give `{label: score}`."""
    if tree is None:
        return dict(scores)

    def build(nodes: Sequence[LabelNode]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for node in nodes:
            out[node.name] = build(node.children) if node.children else scores.get(node.label, 0.0)
        return out

    return build(tree)


def with_separator(tree: Sequence[LabelNode], separator: str) -> tuple[LabelNode, ...]:
    """The same tree with its leaves' flattened names joined by `separator` instead."""

    def pairs(nodes: Sequence[LabelNode]) -> list[tuple[str, list[Any]]]:
        return [(n.name, pairs(n.children)) for n in nodes]

    return tree_from_nodes(pairs(tree), separator)


def check_tree(item: ClassifyItem, index: int | None = None) -> None:
    """Raise InvalidInput unless the item's label tree (if any) flattens to exactly its labels."""
    if not isinstance(item.return_hierarchical, bool):
        raise InvalidInput("must be true or false", field="return_hierarchical", index=index)
    tree = item.label_tree
    if tree is None:
        return
    if not isinstance(tree, tuple) or not all(isinstance(n, LabelNode) for n in tree):
        raise InvalidInput("must be a tuple of LabelNode", field="label_tree", index=index)
    if flatten(tree) != tuple(item.labels):
        raise InvalidInput("does not flatten to the item's labels", field="label_tree", index=index)


def split_labels(
    labels: Any, separator: str = DEFAULT_SEPARATOR, index: int | None = None
) -> tuple[tuple[str, ...] | Any, tuple[LabelNode, ...] | None]:
    """(flat labels, tree or None): a mapping becomes a tree and its flattened labels; else unchanged."""
    if isinstance(labels, Mapping):
        tree = tree_from_labels(labels, separator, index=index)
        return flatten(tree), tree
    return labels, None
