"""From the model's raw text to the suggestion an editor shows.

- single line, or several lines ending where the cursor's block ends (indentation falls below it);
- nothing the editor already has after the cursor (auto-closed brackets and quotes, the rest of the
  line), and no closing bracket the code before the cursor never opened;
- no suggestion that is only whitespace or only repeats the line(s) below the cursor.
"""

from __future__ import annotations

from engine import blocks

from .context import Cursor

CLOSES = {")": "(", "]": "[", "}": "{"}
OPENERS = set(CLOSES.values())
QUOTES = "\"'`"


def finish(text: str, cur: Cursor, multiline: bool) -> str:
    """The suggestion to show for the model's `text` at `cur` ("" for none)."""
    first = text.partition("\n")[0]
    trimmed = trim_line_end(first, cur)
    # a first line cut short ends the suggestion: its statement closed where the code already does
    text = cut_block(text, cur) if multiline and trimmed == first else trimmed
    text = text.rstrip() if "\n" in text else text.rstrip("\r\n")
    if not text.strip() or repeats_following_lines(text, cur):
        return ""
    return text


def trim_line_end(first: str, cur: Cursor) -> str:
    """Cut the first line where it closes a bracket or string that was open before the cursor and
    that the rest of the line already closes, or before a closer nothing opened; drop a tail that
    duplicates the rest of the line."""
    stack, quote = _open_state(cur.line_prefix)
    in_prefix_string = bool(quote)  # the cursor sits inside a string the line opened
    depth0 = len(stack)
    for i, ch in enumerate(first):
        if quote:
            if ch == quote and (i == 0 or first[i - 1] != "\\"):
                if in_prefix_string and cur.line_suffix.startswith(ch):
                    return first[:i]  # the editor's auto-closed quote ends this string
                quote, in_prefix_string = "", False
            continue
        if ch in QUOTES:
            quote = ch
        elif ch in OPENERS:
            stack.append(ch)
        elif ch in CLOSES:
            if not stack or stack[-1] != CLOSES[ch]:
                return first[:i]  # closes nothing that is open: the model went astray
            stack.pop()
            if len(stack) < depth0 and cur.line_suffix.lstrip().startswith(ch):
                return first[:i]  # the rest of the line already has this closer
            depth0 = min(depth0, len(stack))
    rest = cur.line_suffix.strip()
    if rest and first.rstrip().endswith(rest):
        return first.rstrip()[: -len(rest)]
    return first


def cut_block(text: str, cur: Cursor) -> str:
    """Keep the lines that belong to the cursor's block (see engine/blocks.py)."""
    return blocks.cut_block(text, cur.line_prefix)


def repeats_following_lines(text: str, cur: Cursor) -> bool:
    """True when the suggestion (past what the cursor's line already has) is the next line(s)."""
    below = [line.strip() for line in cur.suffix.split("\n")[1:] if line.strip()]
    mine = [line.strip() for line in (cur.line_prefix + text).split("\n") if line.strip()]
    if not mine or not below:
        return False
    if len(mine) > 1 and mine[0] == cur.line_prefix.strip():
        mine = mine[1:]  # the cursor's own line, completed to what it was: compare the new lines
    return mine == below[: len(mine)]


def confidence_cut(text: str, probs: list[float], ends: list[int], threshold: float) -> str:
    """`text` before its first token the model gave less than `threshold` probability (`probs`
    and `ends` per token, see engine/requests.py): what an engine asked for `min_confidence`
    would have generated."""
    start = 0
    for p, end in zip(probs, ends):
        if p < threshold:
            return text[:start]
        start = end
    return text


def shown_confidence(length: int, probs: list[float] | None, ends: list[int] | None) -> float | None:
    """The least probability among the tokens that make up the first `length` characters (None
    when the backend gave no probabilities)."""
    if not probs or not ends:
        return None
    start, least = 0, 1.0
    for p, end in zip(probs, ends):
        if start >= length:
            break
        least = min(least, p)
        start = end
    return round(least, 4)


def safe_partial(text: str, multiline: bool) -> str:
    """What of a cut-off generation can be shown: complete lines, or whole words of one line."""
    if multiline and "\n" in text:
        return text[: text.rfind("\n")]
    cut = max(text.rfind(" "), text.rfind("\t"))
    return text[:cut] if cut > 0 else ""


def _open_state(line: str) -> tuple[list[str], str]:
    """Unclosed brackets and an unclosed string quote of a line prefix."""
    stack: list[str] = []
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote and (i == 0 or line[i - 1] != "\\"):
                quote = ""
            continue
        if ch in QUOTES:
            quote = ch
        elif ch in OPENERS:
            stack.append(ch)
        elif ch in CLOSES and stack and stack[-1] == CLOSES[ch]:
            stack.pop()
    return stack, quote

