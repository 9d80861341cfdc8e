"""When a streaming session is scored, and over which part of its text.

The same strategies as the reference's `gliclass.streaming` (same decisions on the same chunks):

- `every_chunk`: after every chunk that added tokens;
- `every_n_tokens:N`: once at least N tokens arrived since the last score (the count then restarts);
- `on_delimiter:D`: after a chunk whose text contains D;
- `never`: only cache (pre-fill a context);
- `sliding_window:W`: every chunk, scored over the last W cached tokens only;
- `TRIGGER+sliding_window:W` composes a trigger with a window (`every_n_tokens:200+sliding_window:512`).

A `Strategy` is an immutable spec; a session keeps its own token count (`fires` returns the new one).
"""

from __future__ import annotations

from dataclasses import dataclass

from gliclass_core.errors import InvalidInput

TRIGGERS = ("every_chunk", "every_n_tokens", "on_delimiter", "never")
MAX_SPEC_LENGTH = 256


@dataclass(frozen=True)
class Strategy:
    """A trigger (`TRIGGERS`), its argument, and an optional scoring window in tokens."""

    trigger: str = "every_chunk"
    n: int = 0
    delimiter: str = ""
    window: int | None = None

    def __post_init__(self) -> None:
        if self.trigger not in TRIGGERS:
            raise InvalidInput(
                f"unknown trigger {self.trigger!r} (known: {', '.join(TRIGGERS)})", field="strategy"
            )
        if self.trigger == "every_n_tokens" and (
            isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1
        ):
            raise InvalidInput("every_n_tokens needs a positive token count", field="strategy")
        if self.trigger == "on_delimiter" and not (isinstance(self.delimiter, str) and self.delimiter):
            raise InvalidInput("on_delimiter needs a non-empty delimiter", field="strategy")
        if self.window is not None and (
            isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 1
        ):
            raise InvalidInput("sliding_window needs a positive token count", field="strategy")

    def fires(self, accumulated: int, tokens_added: int, text: str) -> tuple[bool, int]:
        """Whether a chunk of `tokens_added` tokens (`text`) triggers a score; and the new token count.

        A chunk that added no tokens never triggers and leaves the count alone (as in the reference).
        """
        if not text or tokens_added <= 0:
            return False, accumulated
        if self.trigger == "every_chunk":
            return True, accumulated
        if self.trigger == "every_n_tokens":
            total = accumulated + tokens_added
            return (True, 0) if total >= self.n else (False, total)
        if self.trigger == "on_delimiter":
            return self.delimiter in text, accumulated
        return False, accumulated

    @property
    def spec(self) -> str:
        """The strategy as `parse_strategy` reads it."""
        head = {
            "every_chunk": "every_chunk",
            "every_n_tokens": f"every_n_tokens:{self.n}",
            "on_delimiter": f"on_delimiter:{self.delimiter}",
            "never": "never",
        }[self.trigger]
        if self.window is None:
            return head
        window = f"sliding_window:{self.window}"
        return window if self.trigger == "every_chunk" else f"{head}+{window}"


def every_chunk() -> Strategy:
    return Strategy()


def every_n_tokens(n: int) -> Strategy:
    return Strategy("every_n_tokens", n=n)


def on_delimiter(delimiter: str) -> Strategy:
    return Strategy("on_delimiter", delimiter=delimiter)


def never() -> Strategy:
    return Strategy("never")


def sliding_window(window: int) -> Strategy:
    """Score every chunk over the last `window` cached tokens."""
    return Strategy(window=window)


def composed(trigger: Strategy, window: Strategy) -> Strategy:
    """`trigger`'s decision, `window`'s window."""
    return Strategy(trigger.trigger, trigger.n, trigger.delimiter, window.window)


def parse_strategy(spec: str) -> Strategy:
    """Read a strategy spec (`every_n_tokens:200+sliding_window:512`; see the module docstring).

    Raises InvalidInput naming the field `strategy`.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidInput("must be a non-empty string", field="strategy")
    if len(spec) > MAX_SPEC_LENGTH:
        raise InvalidInput(f"is longer than {MAX_SPEC_LENGTH} characters", field="strategy")
    head, plus, tail = spec.partition("+sliding_window:")
    window = None
    if plus:
        window = _count(tail, "sliding_window")
    name, _, arg = head.partition(":")
    name = name.strip()
    if name == "sliding_window" and not plus:
        return sliding_window(_count(arg, "sliding_window"))
    if name == "every_n_tokens":
        return Strategy("every_n_tokens", n=_count(arg, name), window=window)
    if name == "on_delimiter":
        # Written in a config file or a URL, a newline or tab arrives escaped.
        delimiter = arg.replace("\\n", "\n").replace("\\t", "\t")
        return Strategy("on_delimiter", delimiter=delimiter, window=window)
    if name in ("every_chunk", "never") and not arg:
        return Strategy(name, window=window)
    raise InvalidInput(
        f"unknown strategy {spec!r} (every_chunk, every_n_tokens:N, on_delimiter:D, never, sliding_window:W, "
        "or TRIGGER+sliding_window:W)",
        field="strategy",
    )


def _count(text: str, what: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise InvalidInput(f"{what} needs a positive integer, got {text!r}", field="strategy") from None
    if value < 1 or value > 1_000_000:
        raise InvalidInput(f"{what} needs an integer from 1 to 1000000, got {value}", field="strategy")
    return value
