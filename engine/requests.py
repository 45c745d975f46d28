"""One generation request as plain data, the same for every engine: the in-process backend and
the engine process (`spectab engine`) both turn a request dict into `Completer.complete` and its
answer into a result dict, here, so the two cannot drift apart.

Request keys (all but prefix optional): prefix, suffix, max_new_tokens, temperature, single_line,
block_of (the cursor's line so far: stop at the end of its block), document (the KV lane),
context (chunks of other files, oldest first) and context_tokens (their budget), draft_fim,
min_confidence, candidates, want_prompt (debugging: answer the prompt's text too).

Result keys: text, stop_reason, the prompt and draft counts, lane, and per token of the text its
probability (`probs`) and where its text ends (`ends`, characters), so the server can judge the
confidence of exactly the part it shows; `alternatives` (text, probs, ends) for candidates.
"""

from __future__ import annotations

from typing import Callable

from .sampling import SamplingParams
from .speculative import Generation


def run_request(completer, r: dict, deadline: float | None, cancelled: Callable[[], bool],
                on_text: Callable[[str], None] | None) -> dict:
    document = r.get("document")
    result = completer.complete(
        str(r.get("prefix", "")), str(r.get("suffix", "")), int(r.get("max_new_tokens", 64)),
        SamplingParams(float(r.get("temperature", 0.0))), single_line=bool(r.get("single_line")),
        deadline=deadline, cancelled=cancelled, on_text=on_text, document=document,
        context=tuple(str(c) for c in r.get("context") or ()), context_tokens=int(r.get("context_tokens", 0)),
        draft_fim=str(r.get("draft_fim", "auto")), min_confidence=float(r.get("min_confidence", 0.0)),
        candidates=int(r.get("candidates", 1)), block_of=r.get("block_of"))
    s = result.stats
    out = {"text": result.text, "stop_reason": s.stop_reason, "prompt_tokens": s.prompt_tokens,
           "reused_prompt_tokens": s.reused_prompt_tokens, "draft_proposed": s.draft_proposed,
           "draft_accepted": s.draft_accepted, "lane": document,
           **token_marks(completer.tokenizer, result),
           "alternatives": [{"text": a.text, **token_marks(completer.tokenizer, a)} for a in result.alternatives]}
    if r.get("want_prompt"):
        out["prompt"] = completer.tokenizer.hf.decode(completer.last_prompt, skip_special_tokens=False)
    return out


def token_marks(tokenizer, g: Generation) -> dict:
    """Each token's probability and the end of its text in `g.text` (tokens past the text's end,
    cut by a stop string, are left out)."""
    probs, ends = [], []
    for j, p in enumerate(g.probs):
        # the text starts after what the first tokens spelled out of the healed whitespace
        spelled = len(tokenizer.decode(g.tokens[: j + 1]).rstrip("\ufffd")) - len(g.healed)
        end = min(max(0, spelled), len(g.text))
        probs.append(round(float(p), 5))
        ends.append(end)
        if end >= len(g.text):
            break
    return {"probs": probs, "ends": ends}
