"""Sessions over both edges of one real `serve` process with a tiny decoder-kv checkpoint.

One checkpoint (built by the reference package, `fixtures.decoder_kv.build`) and one serve process
(CPU, API keys, small `[sessions]` limits) for the module. Conversations sent over the gRPC
stream, HTTP per-message POSTs and the HTTP NDJSON stream give what an in-process `SessionStore`
fed the same chunks gives; errors are answered per message and name their field; hostile messages
over both edges end as answers or typed errors while the server stays up.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
import requests
from fixtures.decoder_kv import build
from fixtures.npm import npm_modules
from fixtures.serve import Serve, start_serve
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from server.proto import classifier_pb2 as pb
from server.proto import classifier_pb2_grpc
from server.proto.generate import PROTO_ROOT

KEY = "session-key-0123456789abcdef"
OTHER_KEY = "other-session-key-fedcba9876543210"
NODE_CLIENT = Path(__file__).parents[1] / "integration" / "node_client"
MAX_PER_CALL = 3
MAX_CHUNK_CHARS = 2000
MAX_CHUNK_TOKENS = 300
MAX_ID = 64
MAX_CACHED = 64
CONFIG = """
[model]
id = "{model}"
device = "cpu"

[label_sets.support]
labels = ["billing", "bug report", "feature request"]

[grpc]
address = "127.0.0.1:0"

[http]
address = "127.0.0.1:0"

[auth]
api_keys = ["{key}", "{other_key}"]

[sessions]
max_per_call = {max_per_call}
max_chunk_chars = {max_chunk_chars}
max_chunk_tokens = {max_chunk_tokens}
max_session_id_length = {max_id}
max_cached_tokens = {max_cached}
"""
AUTH = [("authorization", f"Bearer {KEY}")]
HEADERS = {"Authorization": f"Bearer {KEY}"}
NDJSON = {**HEADERS, "Content-Type": "application/x-ndjson"}
LABELS = ["billing", "bug report", "praise"]
CHUNKS = [
    "Hi, I was charged twice this month.",
    " Also the app crashes when I log in",
    "",  # an empty chunk: nothing appended, nothing fires
    " and the export button does nothing.",
    " Otherwise, I love the new dashboard! Thanks a lot, really, it is great.",
    " Please refund the second charge.",
]
#: Error codes a message may end with (google.rpc.Code numbers).
TYPED = {3: "INVALID_ARGUMENT", 9: "FAILED_PRECONDITION", 8: "RESOURCE_EXHAUSTED"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("decoder_kv") / "ckpt")


@pytest.fixture(scope="module")
def serve(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    config = CONFIG.format(
        model=checkpoint, key=KEY, other_key=OTHER_KEY, max_per_call=MAX_PER_CALL,
        max_chunk_chars=MAX_CHUNK_CHARS, max_chunk_tokens=MAX_CHUNK_TOKENS, max_id=MAX_ID,
        max_cached=MAX_CACHED,
    )  # fmt: skip
    with start_serve(tmp_path_factory.mktemp("serve"), config) as served:
        yield served


@pytest.fixture(scope="module")
def stub(serve: Serve) -> Iterator[Any]:
    with grpc.insecure_channel(serve.grpc_address) as channel:
        yield classifier_pb2_grpc.ClassifierStub(channel)


@pytest.fixture(scope="module")
def classifier(checkpoint: Path) -> Any:
    from gliclass_core import Classifier

    return Classifier.from_pretrained(str(checkpoint), device="cpu")


def in_process(classifier: Any, strategy: str | None, chunks: Sequence[str]) -> list[Any]:
    """The updates an in-process SessionStore (the serve's limits) gives for `chunks`."""
    from gliclass_core.runtime.sessions import SessionLimits, SessionStore, parse_strategy

    store = SessionStore(
        classifier, SessionLimits(max_cached_tokens=MAX_CACHED, max_chunk_tokens=MAX_CHUNK_TOKENS)
    )
    chosen = parse_strategy(strategy or "every_chunk")
    return [store.append("s", chunk, LABELS, strategy=chosen) for chunk in chunks]


def grpc_session(stub: Any, messages: Sequence[pb.SessionRequest]) -> list[pb.SessionResponse]:
    return list(stub.ClassifySession(iter(messages), metadata=AUTH, timeout=120))


def ndjson(serve: Serve, lines: Sequence[dict[str, Any] | bytes]) -> list[dict[str, Any]]:
    body = b"".join((x if isinstance(x, bytes) else json.dumps(x).encode()) + b"\n" for x in lines)
    reply = requests.post(serve.url + "/v1/sessions", data=body, headers=NDJSON, timeout=120)
    assert reply.status_code == 200, reply.text
    return [json.loads(line) for line in reply.text.splitlines()]


def message_json(session_id: str, chunk: str, first: bool, strategy: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"sessionId": session_id, "text": chunk}
    if first:
        body["labels"] = LABELS
        if strategy is not None:
            body["strategy"] = strategy
    return body


def scores_of(result: Any) -> list[float]:
    if isinstance(result, dict):
        return [s["score"] for s in result["scores"]]
    return [s.score for s in result.scores]


@pytest.mark.parametrize("strategy", [None, "every_n_tokens:12", "on_delimiter:.+sliding_window:20"])
def test_conversations_over_both_edges_equal_an_in_process_store(
    serve: Serve, stub: Any, classifier: Any, strategy: str | None
) -> None:
    expected = in_process(classifier, strategy, CHUNKS)
    tag = strategy or "default"
    over_grpc = grpc_session(stub, [_proto(f"g-{tag}", c, i == 0, strategy) for i, c in enumerate(CHUNKS)])
    over_stream = ndjson(serve, [message_json(f"n-{tag}", c, i == 0, strategy) for i, c in enumerate(CHUNKS)])
    over_posts = []
    for i, chunk in enumerate(CHUNKS):
        body = message_json(f"p-{tag}", chunk, i == 0, strategy)
        del body["sessionId"]
        reply = requests.post(f"{serve.url}/v1/sessions/p-{tag}", json=body, headers=HEADERS, timeout=60)
        assert reply.status_code == 200, reply.text
        over_posts.append(reply.json())
    for want, got_grpc, got_stream, got_post in zip(expected, over_grpc, over_stream, over_posts):
        assert not got_grpc.HasField("error") and "error" not in got_stream and "error" not in got_post
        assert got_grpc.triggered == got_stream["triggered"] == got_post["triggered"] == want.triggered
        assert got_grpc.cached_tokens == got_stream["cachedTokens"] == want.cached_tokens <= MAX_CACHED
        assert got_grpc.tokens_added == got_post["tokensAdded"] == want.tokens_added
        if want.triggered:
            expected_scores = list(want.prediction.scores.values())
            for got in (got_grpc.result, got_stream["result"], got_post["result"]):
                assert scores_of(got) == pytest.approx(expected_scores, abs=1e-5)
        else:
            assert not got_grpc.HasField("result") and "result" not in got_stream
    fired = [u.triggered for u in expected]
    if strategy == "every_n_tokens:12":
        # Fires only when 12 tokens arrived since the last score: some chunks wait.
        assert True in fired and False in fired[1:]
    assert [r.new_session for r in over_grpc] == [True] + [False] * (len(CHUNKS) - 1)


def _proto(session_id: str, chunk: str, first: bool, strategy: str | None) -> pb.SessionRequest:
    message = pb.SessionRequest(session_id=session_id, text=chunk)
    if first:
        message.labels.extend(LABELS)
        if strategy is not None:
            message.strategy = strategy
    return message


def test_a_node_client_holds_a_conversation_over_the_bidirectional_stream(
    serve: Serve, classifier: Any
) -> None:
    """@grpc/grpc-js loads the public .proto at run time and streams a conversation, key included."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the Node client test needs Node.js >= 18")
    npm_modules(NODE_CLIENT, "@grpc/grpc-js")  # `npm ci` once per session, or a skip saying why
    done = subprocess.run(
        [node, "session.js", serve.grpc_address, str(PROTO_ROOT), KEY, "node-1", json.dumps(LABELS),
         json.dumps(CHUNKS)],
        cwd=NODE_CLIENT, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)
    expected = in_process(classifier, None, CHUNKS)
    assert len(answers) == len(CHUNKS) + 1 and answers[-1]["closed"] and answers[-1]["error"] is None
    assert [a["new_session"] for a in answers[:-1]] == [True] + [False] * (len(CHUNKS) - 1)
    for want, got in zip(expected, answers):
        assert got["error"] is None and got["session_id"] == "node-1"
        assert (got["triggered"], got["cached_tokens"]) == (want.triggered, want.cached_tokens)
        if want.triggered:
            assert [label for label, _ in got["scores"]] == list(want.prediction.scores)
            assert [score for _, score in got["scores"]] == pytest.approx(
                list(want.prediction.scores.values()), abs=1e-5
            )


def test_a_key_reaches_only_its_own_sessions(serve: Serve, stub: Any) -> None:
    """Session ids live in the caller's namespace: another key, or a Kafka route's id, is out of reach."""
    other = {"Authorization": f"Bearer {OTHER_KEY}"}
    first = {"text": "My card was charged twice.", "labels": LABELS}
    mine = requests.post(f"{serve.url}/v1/sessions/shared-id", json=first, headers=HEADERS, timeout=60)
    assert mine.status_code == 200 and mine.json()["newSession"] is True, mine.text
    theirs = requests.post(f"{serve.url}/v1/sessions/shared-id", json=first, headers=other, timeout=60)
    assert theirs.status_code == 200 and theirs.json()["newSession"] is True, theirs.text
    assert theirs.json()["cachedTokens"] == mine.json()["cachedTokens"]  # their own, not appended to mine
    closed = requests.delete(f"{serve.url}/v1/sessions/shared-id", headers=other, timeout=60).json()
    assert closed["sessionId"] == "shared-id" and closed["closed"] is True
    again = requests.post(
        f"{serve.url}/v1/sessions/shared-id", json={"text": " Still waiting."}, headers=HEADERS, timeout=60
    ).json()
    assert again["newSession"] is False and again["cachedTokens"] > mine.json()["cachedTokens"]
    # The same key over gRPC reaches the session it opened over HTTP.
    (over_grpc,) = grpc_session(stub, [pb.SessionRequest(session_id="shared-id", text=" Any news?")])
    assert not over_grpc.new_session and over_grpc.cached_tokens > again["cachedTokens"]
    # A POST that only closes ends the key's own session.
    closing = requests.post(
        f"{serve.url}/v1/sessions/shared-id", json={"close": True}, headers=HEADERS, timeout=60
    )
    assert closing.status_code == 200 and closing.json()["closed"] is True, closing.text
    # A Kafka route's session id names a session of this key, not the route's conversation.
    kafka_like = requests.post(
        f"{serve.url}/v1/sessions/kafka:chats:0:1:alice", json=first, headers=HEADERS, timeout=60
    ).json()
    assert kafka_like["newSession"] is True and kafka_like["sessionId"] == "kafka:chats:0:1:alice"


def test_close_then_reuse_starts_a_new_session(serve: Serve, stub: Any) -> None:
    assert stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=AUTH, timeout=30).extra["sessions"] == "true"
    first, closed, again = grpc_session(
        stub,
        [
            pb.SessionRequest(session_id="c-1", text="Some text here.", labels=LABELS),
            pb.SessionRequest(session_id="c-1", close=True),  # close only
            pb.SessionRequest(session_id="c-1", text="New text.", label_set="support"),
        ],
    )
    assert first.new_session and first.triggered and not first.closed
    assert closed.closed and not closed.HasField("error")
    assert again.new_session and again.cached_tokens == again.tokens_added
    assert [s.label for s in again.result.scores] == ["billing", "bug report", "feature request"]

    url = f"{serve.url}/v1/sessions/c-2"
    start = requests.post(url, json={"text": "Hello there.", "labels": LABELS}, headers=HEADERS, timeout=60)
    assert start.json()["newSession"] is True
    assert requests.delete(url, headers=HEADERS, timeout=60).json()["closed"] is True
    assert requests.delete(url, headers=HEADERS, timeout=60).json()["closed"] is False  # not open
    again_http = requests.post(url, json={"text": "Hi.", "labels": LABELS}, headers=HEADERS, timeout=60)
    assert again_http.json()["newSession"] is True
    # A chunk with close: appended, scored, then the session ends.
    last = requests.post(url, json={"text": " Bye.", "close": True}, headers=HEADERS, timeout=60).json()
    assert last["closed"] is True and last["triggered"] is True


def bad_messages() -> list[tuple[dict[str, Any], str]]:
    """(message, the field its error must name), every one failing alone."""
    many_tokens = "word " * (MAX_CHUNK_TOKENS + 10)  # under the character limit, over the token one
    assert len(many_tokens) < MAX_CHUNK_CHARS
    return [
        ({"sessionId": "e-1", "text": "x", "labels": LABELS, "strategy": "sometimes"}, "strategy"),
        ({"sessionId": "", "text": "x", "labels": LABELS}, "session_id"),
        ({"sessionId": "i" * (MAX_ID + 1), "text": "x", "labels": LABELS}, "session_id"),
        ({"sessionId": "e-1", "text": "y" * (MAX_CHUNK_CHARS + 1), "labels": LABELS}, "text"),
        ({"sessionId": "e-1", "text": many_tokens, "labels": LABELS}, "text"),
        ({"sessionId": "e-1", "text": "x", "labels": ["a", "a"]}, "labels"),
        ({"sessionId": "e-1", "text": "x", "labelSet": "nope"}, "label_set"),
        ({"sessionId": "e-1", "text": "x", "threshold": 0.3}, "threshold"),
        ({"sessionId": "e-new", "text": "x"}, "labels"),  # no labels, and the session has none
    ]


def test_per_message_errors_name_their_field_and_keep_the_stream_alive(serve: Serve, stub: Any) -> None:
    from google.protobuf import json_format

    bad = bad_messages()
    good = {"sessionId": "e-ok", "text": "Still answering.", "labels": LABELS}
    lines = [good, *[m for m, _ in bad], good]
    fields = [None, *[f for _, f in bad], None]
    over_grpc = grpc_session(stub, [json_format.ParseDict(m, pb.SessionRequest()) for m in lines])
    over_http = ndjson(serve, [lines[0], b"{not json", *lines[1:]])
    assert over_http.pop(1)["error"]["field"] == "body"  # the undecodable line, answered in its place
    assert len(over_grpc) == len(over_http) == len(lines)
    for field, got_grpc, got_http in zip(fields, over_grpc, over_http):
        if field is None:
            assert not got_grpc.HasField("error") and "error" not in got_http, (got_grpc, got_http)
            continue
        assert (got_grpc.error.status, got_grpc.error.field) == ("INVALID_ARGUMENT", field), got_grpc
        assert got_http["error"]["field"] == field and got_http["error"]["code"] == 3
    assert over_grpc[-1].triggered and over_http[-1]["triggered"]

    # Sessions per call: a stream names at most MAX_PER_CALL sessions it has not closed.
    opened = [{"sessionId": f"s-{i}", "text": "open", "labels": LABELS} for i in range(MAX_PER_CALL)]
    one_more = {"sessionId": "s-more", "text": "one too many", "labels": LABELS}
    lines = [*opened, one_more, {"sessionId": "s-0", "close": True}, one_more]
    over_grpc = grpc_session(stub, [json_format.ParseDict(m, pb.SessionRequest()) for m in lines])
    refused = over_grpc[MAX_PER_CALL]
    assert (refused.error.status, refused.error.field) == ("INVALID_ARGUMENT", "session_id")
    assert over_grpc[-2].closed and over_grpc[-1].new_session and over_grpc[-1].triggered
    assert ndjson(serve, lines)[MAX_PER_CALL]["error"]["field"] == "session_id"

    broken = ndjson(serve, [b"{not json", b"[1, 2]", {"sessionId": "e-x", "text": 5}])
    assert [b["error"]["field"] for b in broken] == ["body", "body", "text"]

    # The unary route answers the error's status, naming the field.
    url = f"{serve.url}/v1/sessions/e-2"
    reply = requests.post(
        url, json={"text": "x", "labels": LABELS, "strategy": "?"}, headers=HEADERS, timeout=30
    )
    assert reply.status_code == 400 and reply.json()["error"]["field"] == "strategy"
    long_id = requests.post(
        f"{serve.url}/v1/sessions/{'i' * (MAX_ID + 1)}", json={}, headers=HEADERS, timeout=30
    )
    assert long_id.status_code == 400 and long_id.json()["error"]["field"] == "session_id"
    other = requests.post(url, json={"sessionId": "zz", "text": "x"}, headers=HEADERS, timeout=30)
    assert other.status_code == 400 and other.json()["error"]["field"] == "session_id"


def test_both_edges_need_a_key(serve: Serve) -> None:
    with grpc.insecure_channel(serve.grpc_address) as channel:
        stub = classifier_pb2_grpc.ClassifierStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            list(stub.ClassifySession(iter([pb.SessionRequest(session_id="a", text="x")]), timeout=30))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        wrong = [("authorization", "Bearer wrong-key-0123456789abc")]
        with pytest.raises(grpc.RpcError) as info:
            list(stub.ClassifySession(iter([]), metadata=wrong, timeout=30))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    json_type = {"Content-Type": "application/json"}
    for method, path, headers in [
        ("POST", "/v1/sessions/a", json_type),
        ("DELETE", "/v1/sessions/a", {}),
        ("POST", "/v1/sessions", {"Content-Type": "application/x-ndjson"}),
    ]:
        reply = requests.request(method, serve.url + path, data=b"{}", headers=headers, timeout=30)
        assert reply.status_code == 401 and reply.json()["error"]["field"] == "Authorization", path
    # The guard's other checks apply to the new routes too (Content-Type here).
    reply = requests.post(
        serve.url + "/v1/sessions/a", data=b"{}", headers={**HEADERS, "Content-Type": "text/plain"}
    )
    assert reply.status_code == 415


hostile_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["<<LABEL>>", "<<SEP>>", "\x00", "\u202e", "a" * (MAX_CHUNK_CHARS + 1), "word " * 400]),
)
plausible_message = st.fixed_dictionaries(
    {"sessionId": st.sampled_from(["h-1", "h-2", "h-3"]), "text": st.text(max_size=40)},
    optional={
        "labels": st.just(LABELS),
        "strategy": st.sampled_from(
            ["every_chunk", "every_n_tokens:3", "on_delimiter:.", "sliding_window:8"]
        ),
        "close": st.booleans(),
    },
)
odd_message = st.fixed_dictionaries(
    {"sessionId": st.one_of(st.text(max_size=8), st.just("i" * 300), st.sampled_from(["h-1", "h-2", " "]))},
    optional={
        "text": hostile_text,
        "labels": st.lists(st.one_of(st.text(max_size=12), st.just("<<LABEL>>")), max_size=5),
        "labelSet": st.sampled_from(["support", "nope", ""]),
        "strategy": st.one_of(
            st.text(max_size=20),
            st.sampled_from(
                ["every_n_tokens:0", "on_delimiter:", "never", "sliding_window:3", "every_chunk"]
            ),
        ),
        "threshold": st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.just(0.5)),
        "multiLabel": st.booleans(),
        "topK": st.integers(0, 5),
        "prompt": st.text(max_size=10),
        "close": st.booleans(),
    },
)
hostile_message = st.one_of(plausible_message, odd_message)
junk_line = st.one_of(
    st.binary(max_size=30).filter(lambda b: b"\n" not in b and b.strip()),
    st.sampled_from([b"[]", b"null", b'{"text": {"a": 1}}', b'{"labels": "x"}', b'{"topK": -1}', b"{" * 40]),
)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    messages=st.lists(hostile_message, min_size=1, max_size=4),
    junk=st.lists(junk_line, max_size=2),
    raw=st.lists(st.one_of(st.binary(max_size=40), st.just(b"\x12\x03\xed\xa0\x80")), max_size=2),
)
def test_hostile_session_messages_end_as_answers_or_typed_errors(
    serve: Serve, stub: Any, messages: list[dict[str, Any]], junk: list[bytes], raw: list[bytes]
) -> None:
    from google.protobuf import json_format

    protos = []
    for message in messages:
        try:
            protos.append(json_format.ParseDict(message, pb.SessionRequest()))
        except json_format.ParseError:  # e.g. a negative topK: the HTTP edge answers that one
            continue
    for answer in grpc_session(stub, protos) if protos else []:
        if answer.HasField("error"):
            assert answer.error.code in TYPED and answer.error.message, answer
    # Bytes that may not be a SessionRequest at all (b"\x12\x03..." is a text that is not UTF-8):
    # answered, or the stream ends INVALID_ARGUMENT, as ClassifyStream does.
    with grpc.insecure_channel(serve.grpc_address) as channel:
        call = channel.stream_stream(
            "/gliclass.v1.Classifier/ClassifySession",
            request_serializer=lambda b: b,
            response_deserializer=pb.SessionResponse.FromString,
        )
        try:
            assert len(list(call(iter(raw), metadata=AUTH, timeout=60))) == len(raw)
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
    answers = ndjson(serve, [*messages, *junk])
    assert len(answers) == len(messages) + len(junk)
    for answer in answers:
        event("answered" if "error" not in answer else f"error {answer['error'].get('field')}")
        if "error" in answer:
            assert answer["error"]["code"] in TYPED and answer["error"]["message"], answer
            assert answer["error"]["code"] != 3 or answer["error"].get("field"), answer
    assert requests.get(serve.url + "/healthz", timeout=10).status_code == 200
