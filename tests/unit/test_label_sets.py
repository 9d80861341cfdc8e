"""item_settings: an item's own values win, then its label set's, then the defaults."""

from __future__ import annotations

from gliclass_core.config import LabelSet
from gliclass_core.label_sets import item_settings
from gliclass_core.types import TRUNCATE, ClassifyItem, LongText

CHUNKED = LongText(mode="chunk")
SUPPORT = LabelSet(
    name="support",
    labels=("billing", "bug"),
    threshold=0.7,
    multi_label=False,
    top_k=1,
    prompt="Ticket topic:",
    long_text=CHUNKED,
    return_hierarchical=True,
)


def test_without_a_label_set_the_defaults_are_those_of_a_plain_item():
    item = item_settings(None).item("t", ("a", "b"))
    assert item == ClassifyItem(text="t", labels=("a", "b"))


def test_the_label_set_fills_what_the_item_does_not_give():
    settings = item_settings(SUPPORT)
    assert (settings.threshold, settings.multi_label, settings.top_k) == (0.7, False, 1)
    assert settings.prompt == "Ticket topic:" and settings.long_text == CHUNKED
    assert settings.return_hierarchical is True


def test_given_values_win_even_when_they_are_falsy():
    settings = item_settings(
        SUPPORT,
        threshold=0.0,
        multi_label=True,
        top_k=3,
        prompt="",  # given and empty: no prompt, not the label set's
        long_text=TRUNCATE,
        return_hierarchical=False,
    )
    assert (settings.threshold, settings.multi_label, settings.top_k) == (0.0, True, 3)
    assert settings.prompt is None and settings.long_text == TRUNCATE
    assert settings.return_hierarchical is False
    assert item_settings(None, prompt="Topic:").prompt == "Topic:"


def test_item_carries_text_labels_and_tree():
    item = item_settings(SUPPORT).item("card charged twice", SUPPORT.labels, SUPPORT.label_tree)
    assert item.text == "card charged twice" and item.labels == ("billing", "bug")
    assert item.threshold == 0.7 and item.prompt == "Ticket topic:" and item.label_tree is None
