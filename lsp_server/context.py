"""The text around the cursor that a request sends to the engine.

The engine cuts prefix and suffix to its token budget itself (at line boundaries, nearest text
kept). This module only trims a huge document to a character window first, so a keystroke in a
100k-line file never tokenises the whole file, and says whether several lines make sense here.
The window starts at an anchor line like the engine's cut, so a remote server that caches prompts
(which gets this window as it is) keeps its cached start while the user types.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.prompts import ANCHOR_REACH, is_anchor

# generous: code averages 3-4 characters a token; the engine cuts precisely afterwards
CHARS_PER_TOKEN = 6


@dataclass(frozen=True)
class Cursor:
    prefix: str
    """Text before the cursor (windowed)."""
    suffix: str
    """Text after the cursor (windowed)."""
    line_prefix: str
    """The cursor's line, up to the cursor."""
    line_suffix: str
    """The rest of the cursor's line."""

    @property
    def at_line_end(self) -> bool:
        return not self.line_suffix.strip()

    @property
    def indent(self) -> str:
        stripped = self.line_prefix.lstrip(" \t")
        return self.line_prefix[: len(self.line_prefix) - len(stripped)]


def cursor_at(text: str, offset: int, context_tokens: int) -> Cursor:
    """The cursor at character `offset` of `text`, with prefix and suffix windows cut at line
    boundaries: most of the budget before the cursor, a quarter after it."""
    line_start = text.rfind("\n", 0, offset) + 1
    line_end = text.find("\n", offset)
    line_end = len(text) if line_end < 0 else line_end
    budget = context_tokens * CHARS_PER_TOKEN
    start = max(0, offset - budget)
    if start > 0:
        nl = text.find("\n", start, offset)
        start = nl + 1 if nl >= 0 else start
        start = _anchored(text, start, line_start)
    end = min(len(text), offset + budget // 4)
    if end < len(text):
        nl = text.rfind("\n", offset, end)
        end = nl + 1 if nl >= 0 else end
    return Cursor(
        prefix=text[start:offset],
        suffix=text[offset:end],
        line_prefix=text[line_start:offset],
        line_suffix=text[offset:line_end].rstrip("\r"),
    )


def _anchored(text: str, start: int, line_start: int) -> int:
    """The first anchor line's start among the ANCHOR_REACH lines from `start` (a line start),
    before the cursor's line; `start` itself when none is."""
    at = start
    for _ in range(ANCHOR_REACH):
        if at >= line_start:
            break
        nl = text.find("\n", at, line_start)
        end = nl + 1 if nl >= 0 else line_start
        if is_anchor(text[at:end]):
            return at
        at = end
    return start
