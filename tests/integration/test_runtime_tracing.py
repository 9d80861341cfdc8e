"""One OTel span per forward batch, linked to the span of every item in it (real model, CPU)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gliclass_core import Classifier, ClassifyItem
from gliclass_core.config import AppConfig, BatchingConfig, ModelConfig
from gliclass_core.runtime import BatchPolicy, Runtime, tracing

LABELS = ("billing", "bug report")


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    # A private provider, not the global one: other tests in this process own that.
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("test"))
    yield exporter
    provider.shutdown()


def test_batch_span_links_every_item_span(exporter: InMemorySpanExporter) -> None:
    tracer = tracing._tracer
    config = AppConfig(model=ModelConfig(device="cpu"), batching=BatchingConfig(max_wait_ms=300))
    classifier = Classifier.from_pretrained("builtin:minilm", device="cpu")
    rt = Runtime.from_config(
        config,
        policy=BatchPolicy.from_config(config.batching, min_padding_efficiency=0.0),
        loader=lambda d: classifier,
    )
    rt.start()
    assert rt.wait_ready(60)
    try:
        futures = []
        parents = []
        for text in ("first caller text here", "second caller text here"):
            with tracer.start_as_current_span("request") as span:
                parents.append(span.get_span_context())
                futures += rt.scheduler.submit([ClassifyItem(text, LABELS)])
        futures += rt.scheduler.submit([ClassifyItem("an untraced caller text", LABELS)])  # no span: no link
        for future in futures:
            future.result(timeout=30)
    finally:
        rt.stop(grace_s=5)
    batches = [s for s in exporter.get_finished_spans() if s.name == "gliclass.batch"]
    assert len(batches) == 1
    span = batches[0]
    assert {(link.context.trace_id, link.context.span_id) for link in span.links} == {
        (p.trace_id, p.span_id) for p in parents
    }
    attrs = span.attributes
    assert attrs["gliclass.batch.size"] == 3 and attrs["gliclass.batch.device"] == "cpu"
    assert 0 < attrs["gliclass.batch.real_tokens"] <= attrs["gliclass.batch.padded_tokens"]
    assert attrs["gliclass.batch.queue_wait_ms"] >= 0


def test_no_sdk_means_no_links_and_no_recording() -> None:
    # Without an SDK the current span is invalid: nothing is captured per item.
    assert tracing.capture_span_context() is None
    with tracing.batch_span(
        [None], size=1, real_tokens=1, padded_tokens=1, device="cpu", queue_wait_s=0.0, priority="bulk"
    ) as span:
        assert not span.is_recording()
