"""Host-bound benchmarking: a tiny model, news-style texts and the tokenizer's own ceiling.

With a model whose forward pass is nearly free, throughput is bounded by the host path alone
(tokenization, batching, completion). The ceiling that path can reach is the Rust tokenizer's
parallel `encode_batch` of the same texts; every path is reported as a share of it, so a user can
see whether their box is host-bound. Everything here is offline and deterministic.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

NEWS_LABELS = (
    "business", "politics", "sport", "technology", "entertainment",
    "health", "science", "world news", "crime", "weather",
)  # fmt: skip

_TOPICS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "business": (
        ("The Bank of England", "Shares in Tesco", "The FTSE 100", "A leading retailer", "Ministers"),
        (
            "interest rates",
            "quarterly profits",
            "the pound",
            "inflation figures",
            "job cuts",
            "a takeover bid",
            "the trade deficit",
            "consumer spending",
        ),
    ),
    "politics": (
        ("The prime minister", "Labour", "The Conservatives", "MPs", "The chancellor", "Downing Street"),
        (
            "the general election",
            "a Commons vote",
            "the budget",
            "immigration rules",
            "a new bill",
            "the party conference",
            "council tax",
            "the opposition leader",
        ),
    ),
    "sport": (
        ("Arsenal", "England's rugby team", "The Wimbledon champion", "Chelsea", "The British sprinter"),
        (
            "the Premier League title",
            "a late equaliser",
            "the Six Nations",
            "the Champions League",
            "a hamstring injury",
            "the world record",
            "the final whistle",
            "the transfer window",
        ),
    ),
    "technology": (
        ("Microsoft", "A Cambridge start-up", "Apple", "Mobile operators", "Games developers"),
        (
            "broadband speeds",
            "a security flaw",
            "the new handset",
            "online music downloads",
            "digital television",
            "spam e-mail",
            "the search engine",
            "a software update",
        ),
    ),
    "entertainment": (
        ("The Oscar-winning actress", "The band", "BBC One", "The director", "West End producers"),
        (
            "the box office",
            "a new album",
            "the awards ceremony",
            "the film festival",
            "a television drama",
            "the chart",
            "the premiere",
            "a world tour",
        ),
    ),
}
_VERBS = (
    "announced",
    "warned about",
    "welcomed",
    "criticised",
    "is expected to respond to",
    "reported a rise in",
    "faces questions over",
    "has defended",
    "called for a review of",
    "confirmed plans for",
)
_TAILS = (
    "on Monday",
    "after weeks of speculation",
    "according to officials",
    "in a statement",
    "despite strong opposition",
    "for the first time in a decade",
    "earlier this year",
    "analysts said",
    "sources close to the talks said",
    "in London",
)


def news_texts(n: int = 1024, min_words: int = 20, max_words: int = 200, seed: int = 0) -> list[str]:
    """`n` BBC-style news paragraphs cut to `min_words`..`max_words` words, reproducible from `seed`."""
    rng = random.Random(seed)
    topics = list(_TOPICS)
    texts = []
    for _ in range(n):
        subjects, objects = _TOPICS[rng.choice(topics)]
        target = rng.randint(min_words, max_words)
        words: list[str] = []
        while len(words) < target:
            words += f"{rng.choice(subjects)} {rng.choice(_VERBS)} {rng.choice(objects)}".split()
            words += f"{rng.choice(_TAILS)}.".split()
        texts.append(" ".join(words[:target]))
    return texts


def build_tiny_model(out: str | Path, seed: int = 0) -> Path:
    """Write a random 1-layer BERT (hidden 32) GLiClass uni-encoder with all-MiniLM-L6-v2's tokenizer.

    Its forward pass is nearly free, so a benchmark with it measures the host path. Returns `out`.
    """
    import torch
    from transformers import AutoTokenizer

    from gliclass_core.builtin import package_dir
    from gliclass_core.modeling.config import parse_config
    from gliclass_core.modeling.heads import GLiClassNetwork
    from gliclass_core.modeling.loading import save_checkpoint
    from gliclass_core.processing.packing import MARKER_TEXTS

    out = Path(out)
    src = package_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(src))
    n = len(tokenizer)
    tokenizer.add_tokens(list(MARKER_TEXTS), special_tokens=True)
    encoder = dict(json.loads((src / "config.json").read_text()))
    encoder.update(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        vocab_size=len(tokenizer),
    )  # fmt: skip
    raw: dict[str, Any] = {
        "model_type": "GLiClass",
        "architectures": ["GLiClassModel"],
        "architecture_type": "uni-encoder",
        "hidden_size": 32,
        "encoder_config": encoder,
        "class_token_index": n,
        "text_token_index": n + 1,
        "example_token_index": n + 2,
        "logit_scale_init_value": 3.0,
    }
    torch.manual_seed(seed)
    network = GLiClassNetwork(parse_config(raw))
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in network.state_dict().items():
        if value.dim() == 0:
            value = torch.tensor(3.0)
        elif value.is_floating_point() and not key.endswith(("LayerNorm.weight", "LayerNorm.bias")):
            value = torch.randn(value.shape, generator=gen) * 0.1
        state[key] = value
    network.load_state_dict(state)
    return save_checkpoint(out, network, raw, tokenizer)


def tiny_model_dir() -> Path:
    """The tiny host-bound model under the gliclass cache, built on first use."""
    from gliclass_core.builtin import cache_root

    out = cache_root() / "tiny-host-bound-v1"
    if not (out / "model.safetensors").is_file():
        tmp = out.with_name(out.name + f".tmp{random.randrange(1 << 30)}")
        build_tiny_model(tmp)
        try:
            tmp.rename(out)
        except OSError:  # another process built it first
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return out


def host_ceiling(classifier: Any, texts: Sequence[str], repeats: int = 3) -> float:
    """Texts/s of the classifier's own Rust tokenizer `encode_batch` on `texts` (best of `repeats`).

    Same tokenizer and the same threads the classifier uses (TOKENIZERS_PARALLELISM as set).
    """
    backend = classifier.packer.pieces.backend
    if backend is None:
        raise ValueError("the model's tokenizer has no Rust backend")
    batch = list(texts)
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        backend.encode_batch(batch, add_special_tokens=True)
        best = max(best, len(batch) / (time.perf_counter() - started))
    return best


def share_line(name: str, rate: float, ceiling: float) -> str:
    """One printed line: a path's items/s as a share of the host ceiling."""
    return f"  {name:<44} {rate:9.1f} items/s  {rate / ceiling:5.2f} of the host ceiling"
