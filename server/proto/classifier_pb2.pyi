from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Item(_message.Message):
    __slots__ = ("id", "text", "labels", "label_set", "threshold", "multi_label", "top_k", "label_thresholds", "prompt", "long_text", "text_chunk_size", "text_chunk_overlap", "labels_chunk_size", "label_tree", "return_hierarchical", "label_separator", "return_uncalibrated")
    class LabelThresholdsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    LABEL_SET_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MULTI_LABEL_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    LABEL_THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    LONG_TEXT_FIELD_NUMBER: _ClassVar[int]
    TEXT_CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    TEXT_CHUNK_OVERLAP_FIELD_NUMBER: _ClassVar[int]
    LABELS_CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    LABEL_TREE_FIELD_NUMBER: _ClassVar[int]
    RETURN_HIERARCHICAL_FIELD_NUMBER: _ClassVar[int]
    LABEL_SEPARATOR_FIELD_NUMBER: _ClassVar[int]
    RETURN_UNCALIBRATED_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    label_set: str
    threshold: float
    multi_label: bool
    top_k: int
    label_thresholds: _containers.ScalarMap[str, float]
    prompt: str
    long_text: str
    text_chunk_size: int
    text_chunk_overlap: int
    labels_chunk_size: int
    label_tree: _containers.RepeatedCompositeFieldContainer[LabelNode]
    return_hierarchical: bool
    label_separator: str
    return_uncalibrated: bool
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., label_set: _Optional[str] = ..., threshold: _Optional[float] = ..., multi_label: _Optional[bool] = ..., top_k: _Optional[int] = ..., label_thresholds: _Optional[_Mapping[str, float]] = ..., prompt: _Optional[str] = ..., long_text: _Optional[str] = ..., text_chunk_size: _Optional[int] = ..., text_chunk_overlap: _Optional[int] = ..., labels_chunk_size: _Optional[int] = ..., label_tree: _Optional[_Iterable[_Union[LabelNode, _Mapping]]] = ..., return_hierarchical: _Optional[bool] = ..., label_separator: _Optional[str] = ..., return_uncalibrated: _Optional[bool] = ...) -> None: ...

class LabelNode(_message.Message):
    __slots__ = ("name", "children")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    name: str
    children: _containers.RepeatedCompositeFieldContainer[LabelNode]
    def __init__(self, name: _Optional[str] = ..., children: _Optional[_Iterable[_Union[LabelNode, _Mapping]]] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ItemResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ItemResult, _Mapping]]] = ...) -> None: ...

class ClassifyStreamRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ...) -> None: ...

class ClassifyStreamResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: ItemResult
    def __init__(self, result: _Optional[_Union[ItemResult, _Mapping]] = ...) -> None: ...

class LabelScore(_message.Message):
    __slots__ = ("label", "score", "children", "uncalibrated_score")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    UNCALIBRATED_SCORE_FIELD_NUMBER: _ClassVar[int]
    label: str
    score: float
    children: _containers.RepeatedCompositeFieldContainer[LabelScore]
    uncalibrated_score: float
    def __init__(self, label: _Optional[str] = ..., score: _Optional[float] = ..., children: _Optional[_Iterable[_Union[LabelScore, _Mapping]]] = ..., uncalibrated_score: _Optional[float] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("queue_ms", "compute_ms", "total_ms")
    QUEUE_MS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    queue_ms: float
    compute_ms: float
    total_ms: float
    def __init__(self, queue_ms: _Optional[float] = ..., compute_ms: _Optional[float] = ..., total_ms: _Optional[float] = ...) -> None: ...

class ItemError(_message.Message):
    __slots__ = ("code", "status", "message", "field")
    CODE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    code: int
    status: str
    message: str
    field: str
    def __init__(self, code: _Optional[int] = ..., status: _Optional[str] = ..., message: _Optional[str] = ..., field: _Optional[str] = ...) -> None: ...

class ItemResult(_message.Message):
    __slots__ = ("id", "scores", "labels", "timings", "label_chunks", "truncated", "label_set", "error", "hierarchy", "text_chunks")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    LABEL_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    LABEL_SET_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    HIERARCHY_FIELD_NUMBER: _ClassVar[int]
    TEXT_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    id: str
    scores: _containers.RepeatedCompositeFieldContainer[LabelScore]
    labels: _containers.RepeatedScalarFieldContainer[str]
    timings: Timings
    label_chunks: int
    truncated: bool
    label_set: str
    error: ItemError
    hierarchy: _containers.RepeatedCompositeFieldContainer[LabelScore]
    text_chunks: int
    def __init__(self, id: _Optional[str] = ..., scores: _Optional[_Iterable[_Union[LabelScore, _Mapping]]] = ..., labels: _Optional[_Iterable[str]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., label_chunks: _Optional[int] = ..., truncated: _Optional[bool] = ..., label_set: _Optional[str] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ..., hierarchy: _Optional[_Iterable[_Union[LabelScore, _Mapping]]] = ..., text_chunks: _Optional[int] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Limits(_message.Message):
    __slots__ = ("max_message_bytes", "max_items_per_request", "max_text_chars", "max_labels_per_item", "stream_max_in_flight")
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_ITEMS_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXT_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_LABELS_PER_ITEM_FIELD_NUMBER: _ClassVar[int]
    STREAM_MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    max_message_bytes: int
    max_items_per_request: int
    max_text_chars: int
    max_labels_per_item: int
    stream_max_in_flight: int
    def __init__(self, max_message_bytes: _Optional[int] = ..., max_items_per_request: _Optional[int] = ..., max_text_chars: _Optional[int] = ..., max_labels_per_item: _Optional[int] = ..., stream_max_in_flight: _Optional[int] = ...) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("model_id", "architecture", "device", "dtype", "max_length", "max_labels", "extra", "limits")
    class ExtraEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MAX_LABELS_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    architecture: str
    device: str
    dtype: str
    max_length: int
    max_labels: int
    extra: _containers.ScalarMap[str, str]
    limits: Limits
    def __init__(self, model_id: _Optional[str] = ..., architecture: _Optional[str] = ..., device: _Optional[str] = ..., dtype: _Optional[str] = ..., max_length: _Optional[int] = ..., max_labels: _Optional[int] = ..., extra: _Optional[_Mapping[str, str]] = ..., limits: _Optional[_Union[Limits, _Mapping]] = ...) -> None: ...

class ListLabelSetsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LabelSet(_message.Message):
    __slots__ = ("name", "labels", "threshold", "multi_label", "top_k", "prompt")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MULTI_LABEL_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    name: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    threshold: float
    multi_label: bool
    top_k: int
    prompt: str
    def __init__(self, name: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., threshold: _Optional[float] = ..., multi_label: _Optional[bool] = ..., top_k: _Optional[int] = ..., prompt: _Optional[str] = ...) -> None: ...

class ListLabelSetsResponse(_message.Message):
    __slots__ = ("label_sets",)
    LABEL_SETS_FIELD_NUMBER: _ClassVar[int]
    label_sets: _containers.RepeatedCompositeFieldContainer[LabelSet]
    def __init__(self, label_sets: _Optional[_Iterable[_Union[LabelSet, _Mapping]]] = ...) -> None: ...

class SessionRequest(_message.Message):
    __slots__ = ("session_id", "text", "labels", "label_set", "strategy", "threshold", "multi_label", "top_k", "prompt", "close")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    LABEL_SET_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MULTI_LABEL_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    text: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    label_set: str
    strategy: str
    threshold: float
    multi_label: bool
    top_k: int
    prompt: str
    close: bool
    def __init__(self, session_id: _Optional[str] = ..., text: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., label_set: _Optional[str] = ..., strategy: _Optional[str] = ..., threshold: _Optional[float] = ..., multi_label: _Optional[bool] = ..., top_k: _Optional[int] = ..., prompt: _Optional[str] = ..., close: _Optional[bool] = ...) -> None: ...

class SessionResponse(_message.Message):
    __slots__ = ("session_id", "triggered", "result", "cached_tokens", "tokens_added", "new_session", "closed", "error")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TRIGGERED_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    CACHED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_ADDED_FIELD_NUMBER: _ClassVar[int]
    NEW_SESSION_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    triggered: bool
    result: ItemResult
    cached_tokens: int
    tokens_added: int
    new_session: bool
    closed: bool
    error: ItemError
    def __init__(self, session_id: _Optional[str] = ..., triggered: _Optional[bool] = ..., result: _Optional[_Union[ItemResult, _Mapping]] = ..., cached_tokens: _Optional[int] = ..., tokens_added: _Optional[int] = ..., new_session: _Optional[bool] = ..., closed: _Optional[bool] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ...) -> None: ...
