"""Prompts: fill-in-the-middle formats and cutting long files to a token budget.

CodeLlama's reference code builds its infilling prompts as
    PSM: [BOS, <PRE>] + enc(prefix) + [<SUF>] + enc_infill(suffix) + [<MID>]
    SPM: [BOS, <PRE>, <SUF>] + enc_infill(suffix) + [<MID>] + enc(prefix)
and stops at <EOT>. StarCoder-style tokenizers spell the same idea <fim_prefix>/<fim_suffix>/
<fim_middle>. Models without infilling tokens get the prefix alone, left to right.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from .errors import SpectabError
from .tokens import Tokenizer

FIM_MODES = ("auto", "psm", "spm", "none")

ANCHOR_EVERY = 8
"""About one non-blank line in this many, chosen by its text, is an anchor: a long prefix is cut
at an anchor, so the cut stays put while the user types or moves a few lines and the engine keeps
the prompt's cached start, instead of moving (and costing a whole prefill) with every line."""
ANCHOR_REACH = 16
"""Lines past the longest fitting cut searched for an anchor; with none there, cut at the line."""

# (prefix, suffix, middle, end-of-infill) token names per family; the first family the tokenizer
# has all of wins.
FIM_FAMILIES = {
    "codellama": ("▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>"),
    "starcoder": ("<fim_prefix>", "<fim_suffix>", "<fim_middle>", None),
}


@dataclass(frozen=True)
class FimTokens:
    family: str
    prefix: int
    suffix: int
    middle: int
    end: int | None


def fim_tokens(tok: Tokenizer) -> FimTokens | None:
    """The infilling tokens this tokenizer has, or None."""
    for family, names in FIM_FAMILIES.items():
        ids = [tok.token_id(n) if n else None for n in names]
        if all(i is not None for i in ids[:3]):
            return FimTokens(family, *ids)
    return None


def resolve_fim(mode: str, tok: Tokenizer, model_name: str) -> str:
    """Turn `auto` into the mode this tokenizer supports; refuse infilling it cannot do."""
    if mode not in FIM_MODES:
        raise SpectabError(f"unknown infilling mode '{mode}'; choose one of {', '.join(FIM_MODES)}")
    has_fim = fim_tokens(tok) is not None
    if mode == "auto":
        return "psm" if has_fim else "none"
    if mode != "none" and not has_fim:
        raise SpectabError(f"{model_name} has no infilling tokens, so it cannot fill in the middle; use --fim none")
    return mode


def stop_ids(tok: Tokenizer, mode: str) -> set[int]:
    """Token ids that end a completion for this tokenizer and prompt mode."""
    ids = set(tok.end_ids)
    fim = fim_tokens(tok)
    if mode != "none" and fim is not None and fim.end is not None:
        ids.add(fim.end)
    return ids


def build_prompt(tok: Tokenizer, mode: str, prefix: str, suffix: str, budget: int,
                 context: list[int] | tuple[int, ...] = ()) -> list[int]:
    """Prompt ids for `mode` (psm/spm/none) holding at most `budget` ids, keeping the text nearest
    the cursor. `mode` must already be resolved (see `resolve_fim`). `context` (ids of other files'
    chunks, see `context_ids`) goes first in the prefix part, and the prefix continues it."""
    context = list(context)
    if len(context) > budget // 2:
        context = []  # never more than half the prompt (callers budget it within this)
    encode_prefix = tok.encode_infill if context else tok.encode
    if mode == "none":
        head = [tok.bos_id] if tok.adds_bos else []
        room = budget - len(head) - len(context)
        ids = encode_prefix(prefix)
        if len(ids) > room:
            # the cut text starts a segment anew: one id of slack for a leading space
            kept = cut_prefix(tok, prefix, room - 1)
            ids = encode_prefix(kept)[-room:] if kept else []
        ids = head + context + ids
        if not ids:
            # an empty document still needs one position to predict from
            start = tok.bos_id if tok.bos_id is not None else tok.eos_id
            ids = [start] if start is not None else []
        return ids

    fim = fim_tokens(tok)
    # CodeLlama's prompts start with BOS; StarCoder's have none.
    head = [tok.bos_id] if fim.family == "codellama" and tok.bos_id is not None else []
    room = budget - len(head) - 3 - len(context)
    pre_ids, suf_ids = encode_prefix(prefix), tok.encode_infill(suffix)
    if len(pre_ids) + len(suf_ids) > room:
        # the prefix matters most; the suffix keeps at least a quarter of the room when it has that much
        suffix_room = min(len(suf_ids), max(room // 4, room - len(pre_ids)))
        suf_ids = tok.encode_infill(cut_suffix(tok, suffix, suffix_room)) if suffix_room else []
        prefix_room = room - len(suf_ids)
        pre_ids = encode_prefix(cut_prefix(tok, prefix, prefix_room - 1)) if len(pre_ids) > prefix_room else pre_ids
        pre_ids = pre_ids[-prefix_room:] if prefix_room > 0 else []
    pre_ids = context + pre_ids
    if mode == "psm":
        return head + [fim.prefix] + pre_ids + [fim.suffix] + suf_ids + [fim.middle]
    return head + [fim.prefix, fim.suffix] + suf_ids + [fim.middle] + pre_ids


def context_ids(tok: Tokenizer, chunks: tuple[str, ...] | list[str], budget: int,
                encoded: dict | None = None) -> list[int]:
    """Ids of the newest chunks (the list runs oldest to newest) that fit in `budget` (one too big
    for what is left is passed over), in the list's order: the same chunks give the same ids, so a prompt that keeps them keeps its cached
    prefix. The first chunk starts a segment, the others continue it. `encoded` memoises."""
    kept: list[str] = []
    total = 0
    for chunk in reversed(chunks):
        n = len(_encoded(tok, chunk, False, encoded)) + 1  # +1: a leading space when it comes first
        if total + n > budget:
            continue  # too big for what is left: an older, smaller chunk may still fit
        kept.insert(0, chunk)
        total += n
    ids: list[int] = []
    for i, chunk in enumerate(kept):
        ids += _encoded(tok, chunk, i == 0, encoded)
    return ids


def _encoded(tok: Tokenizer, text: str, first: bool, memo: dict | None) -> list[int]:
    key = (id(tok), first, text)
    if memo is not None and key in memo:
        return memo[key]
    ids = tok.encode(text) if first else tok.encode_infill(text)
    if memo is not None:
        if len(memo) > 256:
            memo.clear()
        memo[key] = ids
    return ids


def cut_prefix(tok: Tokenizer, text: str, budget: int) -> str:
    """The longest tail of `text` starting at an anchor line (or, with none near, at a line boundary)
    that encodes to <= budget ids; when even the last line is too long, that line's last
    characters that fit."""
    if budget <= 0:
        return ""
    lines = text.splitlines(keepends=True)
    # binary search on the first kept line: fewer lines never need more ids
    lo, hi = 0, len(lines)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(tok.encode("".join(lines[mid:]))) <= budget:
            hi = mid
        else:
            lo = mid + 1
    if lo == len(lines):
        return _tail_chars(tok, lines[-1] if lines else text, budget)
    if lo > 0:
        # the window may start anywhere; only the text decides where the cut goes
        lo = next((i for i in range(lo, min(lo + ANCHOR_REACH, len(lines) - 1)) if is_anchor(lines[i])), lo)
    return "".join(lines[lo:])


def is_anchor(line: str) -> bool:
    """Whether a long prompt may start at `line` (see ANCHOR_EVERY)."""
    text = line.strip()
    return bool(text) and zlib.crc32(text.encode("utf-8", "surrogatepass")) % ANCHOR_EVERY == 0


def cut_suffix(tok: Tokenizer, text: str, budget: int) -> str:
    """The longest head of `text` ending at a line boundary that encodes to <= budget ids."""
    if budget <= 0:
        return ""
    lines = text.splitlines(keepends=True)
    lo, hi = 0, len(lines)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(tok.encode_infill("".join(lines[:mid]))) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return "".join(lines[:lo])


def _tail_chars(tok: Tokenizer, line: str, budget: int) -> str:
    # one enormous line (minified code, data): keep as many of its last characters as fit
    lo, hi = 0, len(line)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(tok.encode(line[mid:])) <= budget:
            hi = mid
        else:
            lo = mid + 1
    return line[lo:]
