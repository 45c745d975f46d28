"""The generation loop: rounds of draft k -> verify k+1 positions in one target forward -> accept.

Plain decoding is the same loop with a drafter that proposes nothing, so both paths share every
stop rule and the speculative output can be compared with the plain one token for token.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import torch

from .blocks import block_ended
from .cached_model import CachedModel, common_prefix_len
from .draft_policy import DraftLength
from .sampling import SamplingParams, accept_greedy, accept_sampled, probabilities
from .tokens import Tokenizer


@dataclass
class StopRules:
    max_new_tokens: int = 64
    stop_ids: set[int] = field(default_factory=set)
    stop_strings: tuple[str, ...] = ()
    single_line: bool = False
    """Stop at the first newline of the completion (the newline is not part of the text)."""
    deadline: float | None = None
    """time.monotonic() after which no new round starts; what was accepted so far is returned."""
    cancelled: Callable[[], bool] | None = None
    """Checked between rounds: True stops generation (a superseded request)."""
    block_of: str | None = None
    """The cursor's line so far, for a multi-line completion: stop once a whole generated line
    falls outside the cursor's block (blocks.py). The text is not cut; the server cuts it."""
    min_confidence: float = 0.0
    """Stop before the first token the target gives less than this probability (0 = never): the
    completion keeps only what the target was sure of."""


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    reused_prompt_tokens: int = 0
    new_tokens: int = 0
    rounds: int = 0
    target_forwards: int = 0
    draft_forwards: int = 0
    draft_proposed: int = 0
    draft_accepted: int = 0
    draft_rounds: int = 0
    """Rounds that verified at least one drafted token."""
    draft_rounds_rejected: int = 0
    """Of those, rounds in which the target rejected a drafted token (the rest accepted all)."""
    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    tokens_per_s: float = 0.0
    stop_reason: str = ""

    @property
    def acceptance(self) -> float:
        return self.draft_accepted / self.draft_proposed if self.draft_proposed else 0.0

    @property
    def alpha(self) -> float:
        """Per-token acceptance: the chance a drafted token is accepted once its predecessors were
        (each rejection ends a run of successes)."""
        trials = self.draft_accepted + self.draft_rounds_rejected
        return self.draft_accepted / trials if trials else 0.0

    def as_dict(self) -> dict:
        out = asdict(self)
        out["acceptance"] = round(self.acceptance, 4)
        out["alpha"] = round(self.alpha, 4)
        out["prefill_ms"] = round(self.prefill_ms, 2)
        out["decode_ms"] = round(self.decode_ms, 2)
        out["tokens_per_s"] = round(self.tokens_per_s, 2)
        return out


@dataclass
class Generation:
    tokens: list[int]
    """Generated ids, stop token excluded, before any text post-processing."""
    text: str
    """Their text, cut before a stop string or the newline of single-line mode."""
    stats: GenerationStats
    probs: list[float] = field(default_factory=list)
    """The target's probability of each generated token (under the sampling distribution when
    sampling), from the verify pass that accepted it."""
    runner_up: list[tuple[int, float]] = field(default_factory=list)
    """Per generated token, the target's second choice there and its probability."""
    branch: int | None = None
    """For an alternative candidate: the position where it leaves the greedy path."""
    alternatives: list["Generation"] = field(default_factory=list)
    """Other candidates (see candidates.py), when asked for."""
    healed: str = ""
    """Text the tokens spell out before `text` starts (see `generate`'s `heal`)."""

    @property
    def confidence(self) -> float:
        """The least probability among the tokens: how sure the target was of the whole text."""
        return min(self.probs) if self.probs else 1.0


def generate(
    target: CachedModel,
    prompt: list[int],
    drafter,
    tokenizer: Tokenizer,
    params: SamplingParams,
    stops: StopRules,
    draft_length: DraftLength | None = None,
    draft_prompt: list[int] | None = None,
    on_text: Callable[[str], None] | None = None,
    generator: torch.Generator | None = None,
    reference: list[int] | None = None,
    heal: str = "",
) -> Generation:
    """Generate after `prompt` with `target`, speculating with `drafter`. `on_text` receives each
    newly accepted piece of text (held back while it could still be the start of a stop string);
    `reference` is text near the cursor that the prompt lacks, for drafters that copy.

    `heal`: text the prompt was cut short of (the whitespace before the cursor, which tokenizers
    merge into the next word): the first tokens are constrained to spell it out (plain steps, the
    target's logits masked to the tokens that fit), and the returned text starts after it."""
    draft_length = draft_length or DraftLength()
    if generator is None and not params.greedy:
        generator = torch.Generator()
        generator.manual_seed(params.seed if params.seed is not None else torch.seed())
    stats = GenerationStats(prompt_tokens=len(prompt))
    stats.reused_prompt_tokens = min(common_prefix_len(target.ids, prompt), len(prompt) - 1)
    draft_model = getattr(drafter, "draft", None)
    draft_forwards0 = draft_model.forwards if draft_model else 0
    drafter.begin(prompt, draft_prompt, reference)

    stop_strings = tuple(s for s in stops.stop_strings if s) + (("\n",) if stops.single_line else ())
    generated: list[int] = []
    skip, heal_left = len(heal), heal
    probs: list[float] = []
    runner_up: list[tuple[int, float]] = []
    text, emitted, reason = "", skip, ""
    t0 = time.perf_counter()
    t_first = None
    while not reason:
        if stops.cancelled is not None and stops.cancelled():
            reason = "cancelled"
            break
        if stops.deadline is not None and time.monotonic() > stops.deadline:
            reason = "deadline"
            break
        left = stops.max_new_tokens - len(generated)
        room = target.capacity - len(prompt) - len(generated)
        if left <= 0 or room <= 0:
            reason = "length" if left <= 0 else "context"
            break
        # while the healed text is spelled out, one constrained position a round
        k = 0 if heal_left else min(draft_length.next_k(), left - 1, room - 1)
        t_draft = time.perf_counter()
        proposal = drafter.propose(generated, k, params, generator) if k > 0 else None
        drafts = proposal.tokens[:k] if proposal else []

        t_verify = time.perf_counter()
        logits = target.extend(prompt + generated + drafts, len(drafts) + 1)
        if heal_left:
            allowed = torch.tensor(tokenizer.starting_with(heal_left), device=logits.device)
            masked = torch.full_like(logits, float("-inf"))
            masked[:, allowed] = logits[:, allowed]
            logits = masked
        if params.greedy:
            m, nxt = accept_greedy(logits, drafts)
            dist = torch.softmax(logits[: m + 1].float(), dim=-1)
        else:
            q = proposal.probs[: len(drafts)] if proposal and proposal.probs is not None else None
            dist = probabilities(logits, params)
            m, nxt = accept_sampled(dist, q, drafts, generator)
            dist = dist[: m + 1]
        chunk = drafts[:m] + [nxt]
        chunk_probs, chunk_runner_up = _confidences(dist, chunk)
        t_done = time.perf_counter()
        # the first round's forward also ran the prompt: it says nothing about verify costs
        draft_length.observe(len(drafts), m, None if t_first is None else t_done - t_verify, t_verify - t_draft)
        if t_first is None:
            t_first = t_done
        stats.rounds += 1
        stats.draft_proposed += len(drafts)
        stats.draft_accepted += m
        if drafts:
            stats.draft_rounds += 1
            stats.draft_rounds_rejected += m < len(drafts)

        for j, t in enumerate(chunk):
            if t in stops.stop_ids:
                chunk, reason = chunk[:j], "eos"
                break
            if chunk_probs[j] < stops.min_confidence:
                chunk, reason = chunk[:j], "confidence"
                break
        generated += chunk
        if heal_left and chunk:
            piece = tokenizer.token_texts[chunk[0]]
            heal_left = heal_left[len(piece):] if heal_left.startswith(piece) else ""
        probs += chunk_probs[: len(chunk)]
        runner_up += chunk_runner_up[: len(chunk)]

        if stop_strings and chunk:
            # earlier text had no stop; the margin covers a partial UTF-8 character decoded anew
            checked = max(skip, len(text) - max(map(len, stop_strings)) - 4)
            text = tokenizer.decode(generated)
            cut = _find_stop(text, stop_strings, checked)
            if cut is not None:
                generated = _tokens_through(tokenizer, generated, cut)
                text, reason = text[:cut], "stop"
        if stops.block_of is not None and chunk and not reason:
            now = text if stop_strings else tokenizer.decode(generated)
            if block_ended(now[skip:], stops.block_of):
                reason = "block end"
        if on_text is not None and chunk:
            text = text if stop_strings else tokenizer.decode(generated)
            safe = _safe_length(text, stop_strings)
            if safe > emitted:
                on_text(text[emitted:safe])
                emitted = safe

    t_end = time.perf_counter()
    if not (stop_strings and reason == "stop"):
        text = tokenizer.decode(generated)
    # generation can end inside a multi-byte character: drop the partial bytes, not show them
    text = text.rstrip("\ufffd")
    if on_text is not None and len(text) > emitted:
        on_text(text[emitted:])
    text = text[skip:]
    del probs[len(generated):], runner_up[len(generated):]  # a stop string may have cut tokens
    stats.new_tokens = len(generated)
    stats.stop_reason = reason
    stats.target_forwards = stats.rounds
    stats.draft_forwards = (draft_model.forwards - draft_forwards0) if draft_model else 0
    stats.prefill_ms = ((t_first or t_end) - t0) * 1000
    stats.decode_ms = (t_end - (t_first or t_end)) * 1000
    stats.tokens_per_s = len(generated) / (t_end - t0) if t_end > t0 else 0.0
    return Generation(generated, text, stats, probs, runner_up, healed=heal)


def _confidences(dist: torch.Tensor, chunk: list[int]) -> tuple[list[float], list[tuple[int, float]]]:
    """From the target's distributions at the chunk's positions [len(chunk), V]: each token's
    probability, and the best other token with its probability (one host sync)."""
    idx = torch.arange(len(chunk), device=dist.device)
    chosen = dist[idx, torch.tensor(chunk, device=dist.device)]
    top = torch.topk(dist, 2, dim=-1)
    rows = torch.stack([chosen, top.values[:, 0], top.values[:, 1], top.indices[:, 0].float(), top.indices[:, 1].float()], 1).tolist()
    probs, runner_up = [], []
    for t, (p, v0, v1, i0, i1) in zip(chunk, rows):
        probs.append(p)
        # the runner-up is the best token other than the one taken (sampling may take the second)
        runner_up.append((int(i1), v1) if int(i0) == t else (int(i0), v0))
    return probs, runner_up


def _find_stop(text: str, stops: tuple[str, ...], start: int) -> int | None:
    hits = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _tokens_through(tokenizer: Tokenizer, ids: list[int], cut: int) -> list[int]:
    # the fewest ids whose text reaches past the cut: they include the token that made the stop
    for n in range(1, len(ids) + 1):
        if len(tokenizer.decode(ids[:n])) > cut:
            return ids[:n]
    return ids


def _safe_length(text: str, stops: tuple[str, ...]) -> int:
    """How much of `text` can be shown now: not a trailing partial UTF-8 character, and not a tail
    that could still grow into a stop string."""
    n = len(text)
    while n and text[n - 1] == "\ufffd":
        n -= 1
    for s in stops:
        for length in range(min(len(s) - 1, n), 0, -1):
            if text[n - length:n] == s[:length]:
                n -= length
                break
    return n
