"""Input packing: assembled ids equal the reference's full-string tokenization, for each tokenizer family.

Tiny SentencePiece-style (Unigram + Metaspace) and byte-level BPE tokenizers are trained here with
the `tokenizers` library; WordPiece is the real MiniLM tokenizer.
"""

from __future__ import annotations

import itertools

import pytest
from fixtures.models import minilm_dir
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from gliclass_core.errors import InvalidInput
from gliclass_core.processing.packing import EXAMPLE, LABEL, MARKER_TEXTS, SEP, Packer, format_example
from gliclass_core.processing.tokens import PieceTokenizer
from gliclass_core.types import Example

CORPUS = [
    "One day I will see the world and travel far away!",
    "The stock market fell sharply after the central bank raised interest rates.",
    "Our team won the championship in overtime last night.",
    "Classify the topic of this text: billing, bug report, feature request.",
    "Ünïcödé façade — naïve café, 東京 and emoji 🙂 too.",
] * 20

TEXTS = [
    "One day I will see the world!",
    "  leading and trailing spaces  ",
    "Ünïcödé café in 東京 🙂",
    "tabs\tand\nnewlines",
]
LABELS = ["travel", "personal dreams", " spaced label ", "finance-and economy", "café"]
PROMPT = "Classify the topic:"
EXAMPLES = (Example("I love hiking.", ("travel",)), Example("Rates went up", ("finance", "politics")))


def _sentencepiece(prepend: str) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=prepend)
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme=prepend)
    trainer = trainers.UnigramTrainer(
        vocab_size=200, special_tokens=["<pad>", "<s>", "</s>", "<unk>"], unk_token="<unk>"
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        special_tokens=[("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


def _byte_bpe(add_prefix_space: bool) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<pad>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.RobertaProcessing(
        ("</s>", 2), ("<s>", 1), add_prefix_space=add_prefix_space
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def _wordpiece() -> PreTrainedTokenizerFast:
    return AutoTokenizer.from_pretrained(str(minilm_dir()))


FAMILIES = {
    "wordpiece": _wordpiece,
    "unigram-always": lambda: _sentencepiece("always"),
    "unigram-first": lambda: _sentencepiece("first"),
    "bytebpe-prefix": lambda: _byte_bpe(True),
    "bytebpe-noprefix": lambda: _byte_bpe(False),
}


def _with_markers(tok: PreTrainedTokenizerFast) -> tuple[PreTrainedTokenizerFast, dict[str, int]]:
    tok.add_tokens(list(MARKER_TEXTS), special_tokens=True)
    return tok, {m: tok.convert_tokens_to_ids(m) for m in MARKER_TEXTS}


def reference_string(arch, prompt_first, text, labels, prompt, examples) -> str:
    """The reference pipeline's input string (uni-encoder and fused layouts)."""
    ex = "".join(f"{EXAMPLE}{format_example(e)}" for e in examples) + SEP if examples else ""
    if arch == "uni-encoder":
        block = "".join(f"{LABEL}{label}" for label in labels) + SEP + (prompt or "")
    else:
        block = (f"{prompt} " if prompt else "") + LABEL * len(labels) + SEP
    return block + text + ex if prompt_first else text + block + ex


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    return _with_markers(FAMILIES[request.param]())


@pytest.mark.parametrize("arch", ["uni-encoder", "bi-encoder-fused"])
def test_assembled_ids_equal_full_string_ids(family, arch: str) -> None:
    tok, markers = family
    pieces = PieceTokenizer(tok, markers)
    for prompt_first, prompt, examples in itertools.product([True, False], [None, PROMPT], [(), EXAMPLES]):
        packer = Packer(pieces, arch, prompt_first, 512, markers)
        for text in TEXTS:
            rows = packer.marker_rows(text, tuple(LABELS), prompt, examples, None)
            assert len(rows) == 1
            full = reference_string(arch, prompt_first, text, LABELS, prompt, examples)
            expected = tok(full)["input_ids"]
            assert list(rows[0].input_ids) == expected, (prompt_first, prompt, bool(examples), text)
            payload = rows[0].payload
            assert [expected[i] for i in payload.markers] == [markers[LABEL]] * len(LABELS)
            if arch == "uni-encoder":
                assert expected[payload.first_sep] == markers[SEP]
                assert markers[SEP] not in expected[: payload.first_sep]


def test_bi_encoder_text_and_label_ids(family) -> None:
    tok, markers = family
    packer = Packer(PieceTokenizer(tok, markers), "bi-encoder", True, 512, markers)
    for text in TEXTS:
        row = packer.bi_row(text, tuple(LABELS), PROMPT)
        assert list(row.input_ids) == tok(f"{PROMPT} {text}")["input_ids"]
        assert [list(x) for x in row.payload.label_ids] == [tok(label)["input_ids"] for label in LABELS]


@pytest.fixture(scope="module")
def wordpiece():
    return _with_markers(_wordpiece())


def test_long_text_is_truncated_never_the_labels(wordpiece) -> None:
    tok, markers = wordpiece
    for prompt_first in (True, False):
        packer = Packer(PieceTokenizer(tok, markers), "uni-encoder", prompt_first, 64, markers)
        rows = packer.marker_rows("word " * 500, ("alpha", "beta gamma"), None, (), None)
        assert len(rows) == 1 and rows[0].truncated
        ids = rows[0].input_ids
        assert len(ids) == 64
        assert ids.count(markers[LABEL]) == 2 and ids.count(markers[SEP]) == 1
        assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id


def test_labels_that_do_not_fit_are_chunked_in_order(wordpiece) -> None:
    tok, markers = wordpiece
    packer = Packer(PieceTokenizer(tok, markers), "uni-encoder", True, 64, markers)
    labels = tuple(f"label number {i}" for i in range(40))
    rows = packer.marker_rows("a short text", labels, None, (), None)
    assert len(rows) > 1
    assert sum(r.num_labels for r in rows) == 40
    for row in rows:
        assert len(row.input_ids) <= 64
        assert row.input_ids.count(markers[LABEL]) == row.num_labels
        assert "short" in tok.decode(row.input_ids)  # every chunk still sees the text


def test_label_longer_than_the_model_is_rejected(wordpiece) -> None:
    tok, markers = wordpiece
    packer = Packer(PieceTokenizer(tok, markers), "uni-encoder", True, 64, markers)
    with pytest.raises(InvalidInput, match="label"):
        packer.marker_rows("text", ("ok", "very long label " * 30), None, (), 3)


def test_label_prompt_template_is_cached(wordpiece) -> None:
    tok, markers = wordpiece
    packer = Packer(PieceTokenizer(tok, markers), "uni-encoder", True, 512, markers)
    packer.marker_rows("first text", ("a", "b"), None, (), None)
    misses = packer.templates.misses
    packer.marker_rows("second text", ("a", "b"), None, (), None)
    assert packer.templates.misses == misses
    assert packer.templates.hits > 0
