"""The one session-message resolver both edges use: `resolve_session` and the wire decoding into it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gliclass_core.config import LabelSet
from gliclass_core.errors import InvalidInput
from gliclass_core.runtime.sessions import SessionLimits, parse_strategy
from gliclass_core.runtime.sessions.service import SessionSettings
from gliclass_core.service.request import RequestLimits
from gliclass_core.service.sessions import SessionRequest, resolve_session, scoped_id
from server.proto import classifier_pb2 as pb
from server.wire.sessions import session_request_from_proto

SETS = {"support": LabelSet("support", ("billing", "bug report"), threshold=0.7, multi_label=False)}
LIMITS = RequestLimits(max_items_per_request=8, max_text_chars=100, max_labels_per_item=4)
SETTINGS = SessionSettings(SessionLimits(max_chunk_chars=200, max_session_id_length=10))


def resolve(**fields: object) -> object:
    return resolve_session(SessionRequest(**fields), SETS, LIMITS, SETTINGS)  # type: ignore[arg-type]


def test_labels_settings_and_strategy_resolve_as_an_items_do() -> None:
    append = resolve(
        session_id="s", text="a chunk", labels=("x", "y"), threshold=0.6, top_k=1, strategy="never"
    )
    # Kept under the caller's namespace (`anonymous` outside a guarded call).
    assert (append.session_id, append.item.text, append.item.labels) == (
        "api:anonymous:s",
        "a chunk",
        ("x", "y"),
    )
    assert (append.item.threshold, append.item.top_k, append.close) == (0.6, 1, False)
    assert append.strategy == parse_strategy("never")
    named = resolve(session_id="s", text="", label_set="support")
    assert named.item.labels == ("billing", "bug report") and named.item.text == ""
    assert (named.item.threshold, named.item.multi_label, named.strategy) == (0.7, False, None)


def test_a_message_without_labels_reuses_the_sessions() -> None:
    append = resolve(session_id="s", text="more", close=True)
    assert append.item.labels == () and append.close
    assert SessionRequest("s", close=True).close_only and not SessionRequest("s", "x", close=True).close_only


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"session_id": ""}, "session_id"),
        ({"session_id": "   "}, "session_id"),
        ({"session_id": "s" * 11}, "session_id"),
        ({"session_id": "s\ud800"}, "session_id"),
        ({"session_id": "s", "text": "t" * 201}, "text"),
        ({"session_id": "s", "text": "\udc00"}, "text"),
        ({"session_id": "s", "text": "x", "strategy": "sometimes"}, "strategy"),
        ({"session_id": "s", "text": "x", "labels": ("a", "a")}, "labels"),
        ({"session_id": "s", "text": "x", "labels": tuple("abcde")}, "labels"),
        ({"session_id": "s", "text": "x", "labels": ("a",), "label_set": "support"}, "label_set"),
        ({"session_id": "s", "text": "x", "label_set": "nope"}, "label_set"),
        ({"session_id": "s", "text": "x", "labels": ("a",), "threshold": 1.5}, "threshold"),
        ({"session_id": "s", "text": "x", "labels": ("a",), "top_k": 0}, "top_k"),
        ({"session_id": "s", "text": "x", "multi_label": False}, "multi_label"),
        ({"session_id": "s", "text": "x", "prompt": "p"}, "prompt"),
    ],
)
def test_refusals_name_the_field(fields: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        resolve(**fields)
    assert info.value.field == field


def test_wire_decoding_keeps_unset_optionals_unset() -> None:
    bare = session_request_from_proto(pb.SessionRequest(session_id="s", text="x"))
    assert bare == SessionRequest("s", "x")
    full = session_request_from_proto(
        pb.SessionRequest(
            session_id="s", labels=["a"], strategy="never", threshold=0.0, multi_label=False, top_k=2,
            prompt="", close=True,
        )
    )  # fmt: skip
    assert (full.strategy, full.threshold, full.multi_label, full.top_k, full.prompt) == (
        "never",
        0.0,
        False,
        2,
        "",
    )
    assert full.close and full.labels == ("a",)


@settings(max_examples=300, deadline=None)
@given(
    st.builds(
        SessionRequest,
        session_id=st.text(max_size=14),
        text=st.text(max_size=210),
        labels=st.lists(st.text(max_size=6), max_size=5).map(tuple),
        label_set=st.sampled_from([None, "support", "nope", ""]),
        strategy=st.one_of(st.none(), st.text(max_size=20), st.sampled_from(["every_n_tokens:3", "never"])),
        threshold=st.one_of(st.none(), st.floats()),
        multi_label=st.one_of(st.none(), st.booleans()),
        top_k=st.one_of(st.none(), st.integers(-2, 5)),
        prompt=st.one_of(st.none(), st.text(max_size=5)),
        close=st.booleans(),
    )
)
def test_any_message_resolves_or_is_refused_naming_a_field(request: SessionRequest) -> None:
    try:
        append = resolve_session(request, SETS, LIMITS, SETTINGS)
    except InvalidInput as exc:
        assert exc.field, exc
        return
    assert append.session_id == scoped_id(request.session_id) and append.item.text == request.text
