"""Text on top of token generation: streaming the answer as it grows, and stop strings."""
from __future__ import annotations

from collections.abc import Callable


def cut_at(text: str, stops: list[str]) -> str:
    """``text`` up to the first occurrence of any stop string."""
    cuts = [text.find(s) for s in stops if s and s in text]
    return text[:min(cuts)] if cuts else text


class TextWatch:
    """A ``generate`` step callback: decodes each row as it grows, stops a row once it holds a stop
    string or its EOS, and passes row 0's new text to ``stream`` (what a terminal prints).

    The streamed pieces add up to the final answer: text is held back while it could still be
    the start of a stop string, or while the last token decodes to an incomplete character.
    """

    def __init__(self, tokenizer, batch_size: int, stops: list[str] | None = None,
                 stream: Callable[[str], None] | None = None, eos_token_id: int | None = None):
        self.tok, self.stops = tokenizer, [s for s in (stops or []) if s]
        self.stream, self.eos = stream, eos_token_id
        self.ids: list[list[int]] = [[] for _ in range(batch_size)]
        self.done = [False] * batch_size
        self.sent = 0  # characters of row 0 already streamed

    def text(self, row: int) -> str:
        return cut_at(self.tok.decode(self.ids[row], skip_special_tokens=True), self.stops)

    def __call__(self, new: list[int]) -> list[bool]:
        for i, t in enumerate(new):
            if self.done[i]:
                continue
            if self.eos is not None and t == self.eos:
                self.done[i] = True
                continue
            self.ids[i].append(t)
            if self.stops:
                full = self.tok.decode(self.ids[i], skip_special_tokens=True)
                self.done[i] = any(s in full for s in self.stops)
        if self.stream is not None:
            self._emit(final=self.done[0])
        return list(self.done)

    def finish(self) -> None:
        """Stream what was held back (call once generation ended)."""
        if self.stream is not None:
            self._emit(final=True)

    def _emit(self, final: bool) -> None:
        text = self.text(0)
        safe = len(text)
        if not final:
            if text.endswith("\ufffd"):  # an incomplete multi-byte character
                safe = len(text.rstrip("\ufffd"))
            for s in self.stops:  # a stop string may be starting at the end
                for k in range(min(len(s) - 1, safe), 0, -1):
                    if text[:safe].endswith(s[:k]):
                        safe -= k
                        break
        if safe > self.sent:
            self.stream(text[self.sent:safe])
            self.sent = safe
