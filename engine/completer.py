"""The engine's front door: text before and after the cursor in, the target's completion out.

A `Completer` owns the loaded models, their KV caches (a lane per document, kept between requests,
so typing forward or switching files reuses the cached prompt prefix), the drafter and the adaptive
draft length.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch

from .cached_model import CachedModel
from .compiled_step import DRAFT_STEP_SIZES, compile_mode, compile_steps, step_sizes
from .drafters import ModelDrafter, NoDrafter, PromptLookupDrafter
from .errors import SpectabError
from .lanes import Lane, LanePool, auto_lane_count
from .loading import LoadedModel, load_model, load_tokenizer
from .profiles import Profile, choose_profile
from .candidates import alternatives
from .prompts import build_prompt, context_ids, cut_suffix, fim_tokens, resolve_fim, stop_ids
from .sampling import SamplingParams
from .draft_policy import DraftLength
from .speculative import Generation, StopRules, generate
from .tokens import check_compatible
from .verify_cost import relative_verify_costs

log = logging.getLogger("spectab")

DRAFT_KINDS = ("ngram", "none")
DRAFT_FIM_MODES = ("auto", "none")


@dataclass(frozen=True)
class EngineOptions:
    context_tokens: int = 2048
    """Prompt budget in tokens (prefix + suffix + infilling markers); lowered to fit each model."""
    max_new_tokens_limit: int = 512
    """The largest max_new_tokens a request may ask for; sizes the KV caches."""
    k: int = 4
    """Tokens drafted per round until costs are measured; then chosen in {0, k_min..k_max} from
    measured acceptance and verify costs (see draft_policy.py), unless `adaptive` is off."""
    k_min: int = 1
    k_max: int = 8
    adaptive: bool = True
    min_confidence: float = 0.3
    """A draft model stops proposing after a token it gives less than this probability."""
    ngram_max: int = 3
    ngram_min: int = 1
    alternatives_time_share: float | None = 1.0
    """Candidates beside the greedy suggestion get this share of the time the greedy one took
    (one that runs out of it is dropped); None: no limit but the request's deadline."""
    kv_lanes: int = 0
    """KV caches kept, one per document, least recently used evicted; 0: as many full ones as fit
    in half the memory free at load (1..16)."""
    compile: bool = True
    """Compile a quantized CPU model's decode and verify steps at load (engine/compiled_step.py);
    SPECTAB_COMPILE=on or off overrides it. `spectab complete` turns it off: one completion's few
    tokens do not repay the 13-75 s of compiling (SmolLM2-135M, 2 cores; README)."""


def alternatives_time_share(default: float | None = 1.0) -> float | None:
    """`SPECTAB_ALTERNATIVES_TIME_SHARE` (a number, or `none` for no limit; the tests use none, as
    they check what the candidates are, not how fast), else `default`."""
    raw = os.environ.get("SPECTAB_ALTERNATIVES_TIME_SHARE", "").strip().lower()
    if not raw:
        return default
    if raw == "none":
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise SpectabError(f"SPECTAB_ALTERNATIVES_TIME_SHARE must be a number or none, not {raw!r}") from None


class Completer:
    def __init__(self, target: LoadedModel, draft: LoadedModel | str = "ngram", fim: str = "auto",
                 options: EngineOptions = EngineOptions(), profile: str = "custom"):
        self.target_info, self.options, self.profile = target, options, profile
        self.tokenizer = target.tokenizer
        self.fim = resolve_fim(fim, self.tokenizer, target.name)
        # one position more than a request can fill: a compiled step's graph takes forwards that end
        # before the cache does (torch specialises a slice that reaches the end; compiled_step.py)
        reserve = options.max_new_tokens_limit + options.k_max + 2
        self.capacity = min(options.context_tokens + reserve, target.model.config.max_position_embeddings)
        # a model with a short context (a small trained draft used as target) still completes: at
        # most half its context is generated, the rest is prompt
        self.max_new_tokens = min(options.max_new_tokens_limit, self.capacity // 2 - options.k_max - 1)
        if self.max_new_tokens < 1:
            raise SpectabError(f"{target.name} has a context of only {self.capacity} tokens")
        self.draft_info: LoadedModel | None = None
        self.draft_capacity = 0
        if isinstance(draft, LoadedModel):
            check_compatible(draft.tokenizer, target.tokenizer)
            self.draft_info = draft
            self.draft_capacity = min(options.context_tokens + reserve, draft.model.config.max_position_embeddings)
            self.max_new_tokens = min(self.max_new_tokens, self.draft_capacity // 2 - options.k_max - 1)
            if self.max_new_tokens < 1:
                raise SpectabError(f"draft {draft.name} has a context of only {self.draft_capacity} tokens")
            self.drafter = None  # a ModelDrafter per lane, over that lane's draft cache
        elif draft == "ngram":
            self.drafter = PromptLookupDrafter(options.ngram_max, options.ngram_min)
        elif draft == "none":
            self.drafter = NoDrafter()
        else:
            raise SpectabError(f"unknown draft '{draft}': give a model, ngram or none")
        # quantized CPU models: decode and verify steps compiled now, not on the first request
        speculates = draft != "none"
        target_steps = compile_steps(target.model, step_sizes(options.k_max if speculates else 0), Path(target.name).name,
                                     options.compile)
        if self.draft_info is not None:
            compile_steps(self.draft_info.model, DRAFT_STEP_SIZES, Path(self.draft_info.name).name, options.compile)
        # compiled steps round differently from eager ones, so every verify runs through a graph:
        # drafts no longer than the largest compiled verify (VERIFY_MAX, where the int4 kernel's
        # four-row block ends anyway), so a verify's rows stay exactly the decode steps' numbers
        k_max = options.k_max
        if speculates and target_steps is not None and target_steps.sizes:
            k_max = min(k_max, max(target_steps.sizes) - 1)
        costs = None
        if options.adaptive and speculates and self.device.type == "cpu":
            # the CPU kernels' price of verifying several positions, before the first request
            costs = relative_verify_costs(target.model, k_max + 1, target_steps)
            log.debug("verify cost by positions, relative to one: %s", {n: round(c, 2) for n, c in costs.items()})
        self.draft_length = DraftLength(min(options.k, k_max), min(options.k_min, k_max), k_max, options.adaptive, costs)
        self.lanes = LanePool(self._new_lane, options.kv_lanes or auto_lane_count(self.lane_bytes()))
        self._lock = threading.Lock()
        self._encoded: dict = {}  # context chunks' ids, per tokenizer: the ring changes rarely
        self.last_prompt: list[int] = []  # the target's prompt of the latest request (debugging)

    def _new_lane(self, document: str) -> Lane:
        target = CachedModel(self.target_info.model, self.capacity)
        if self.draft_info is None:
            return Lane(document, target, None, self.drafter)
        draft = CachedModel(self.draft_info.model, self.draft_capacity)
        drafter = ModelDrafter(draft, self.target_info.model.config.vocab_size, self.options.min_confidence)
        return Lane(document, target, draft, drafter)

    def lane_bytes(self) -> int:
        """The memory a lane holds when its caches are full (keys and values of every layer)."""
        total = 0
        for info, capacity in ((self.target_info, self.capacity), (self.draft_info, self.draft_capacity)):
            if info is not None:
                cfg, model = info.model.config, info.model
                element = torch.empty(0, dtype=model.compute_dtype).element_size()
                total += 2 * cfg.num_layers * cfg.num_kv_heads * cfg.head_dim * capacity * element
        return total

    @property
    def target(self) -> CachedModel:
        """The target cache of the lane of requests that name no document."""
        return self.lanes.get(None).target

    @property
    def draft(self) -> CachedModel | None:
        return self.lanes.get(None).draft

    @classmethod
    def open(cls, profile: str | None = None, target: str | None = None, draft: str | None = None,
             device: str = "auto", dtype: str = "auto", fim: str | None = None,
             options: EngineOptions = EngineOptions(), quant: str = "auto") -> "Completer":
        """Load a profile (or `auto`), optionally overriding its target, draft and infilling mode."""
        chosen, allow_download = choose_profile(profile, target, draft)
        return cls.from_profile(chosen, allow_download, device, dtype, fim, options, quant)

    @classmethod
    def from_profile(cls, chosen: Profile, allow_download: bool, device: str = "auto", dtype: str = "auto",
                     fim: str | None = None, options: EngineOptions = EngineOptions(), quant: str = "auto") -> "Completer":
        compile_mode()  # a bad SPECTAB_COMPILE fails before minutes of loading, not after
        log.debug("loading target %s", chosen.target)
        target_model = load_model(chosen.target, device, dtype, allow_download, quant)
        draft: LoadedModel | str = chosen.draft
        if chosen.draft not in DRAFT_KINDS:
            # a draft of another vocabulary is refused before its weights load (and pack)
            check_compatible(load_tokenizer(chosen.draft, allow_download), target_model.tokenizer)
            log.debug("loading draft %s", chosen.draft)
            device_name = str(target_model.model.device)
            # a quantized target computes in its own activation dtype; the draft picks its own
            dtype_name = "auto" if target_model.quant != "none" else str(target_model.model.embed.weight.dtype).removeprefix("torch.")
            draft = load_model(chosen.draft, device_name, dtype_name, allow_download, quant)
        return cls(target_model, draft, fim or chosen.fim, options, chosen.name)

    @property
    def quant(self) -> str:
        """How the weights run: the target's, and the draft model's after a slash when it differs."""
        t = self.target_info.quant
        d = self.draft_info.quant if self.draft_info else t
        return t if d == t else f"{t}/{d}"

    @property
    def draft_name(self) -> str:
        return self.draft_info.name if self.draft_info else self.drafter.name

    @property
    def device(self) -> torch.device:
        return self.target_info.model.device

    @property
    def draft_infills(self) -> bool:
        """Whether the draft model can read the target's infilling prompt: its tokenizer has the
        target's infilling tokens, at the same ids, inside its own vocabulary (a draft trained for
        infilling; AMD-Llama-135m-code has none of them)."""
        if self.draft_info is None:
            return False
        mine, theirs = fim_tokens(self.draft_info.tokenizer), fim_tokens(self.tokenizer)
        if mine is None or mine != theirs:
            return False
        vocab = self.draft_info.model.config.vocab_size
        return all(i is None or i < vocab for i in (mine.prefix, mine.suffix, mine.middle, mine.end))

    def prompts(self, prefix: str, suffix: str, max_new_tokens: int, fim: str | None = None,
                context: tuple[str, ...] = (), context_tokens: int = 0,
                draft_fim: str = "auto") -> tuple[list[int], list[int] | None]:
        """The target's prompt and, for a draft model, the draft's own: the same infilling prompt
        when the draft can infill (and `draft_fim` is auto), else the prefix left to right. Both
        start with the newest `context` chunks that fit in `context_tokens`."""
        if draft_fim not in DRAFT_FIM_MODES:
            raise SpectabError(f"unknown draft infilling mode '{draft_fim}'; choose auto or none")
        mode = resolve_fim(fim, self.tokenizer, self.target_info.name) if fim else self.fim
        reserve = max_new_tokens + self.options.k_max + 1
        budget = min(self.options.context_tokens, self.capacity - reserve)
        extra = context_ids(self.tokenizer, context, min(context_tokens, budget // 2), self._encoded) if context_tokens else []
        target_prompt = build_prompt(self.tokenizer, mode, prefix, suffix if mode != "none" else "", budget, extra)
        draft_prompt = None
        if self.draft_info is not None:
            draft_budget = min(self.options.context_tokens, self.draft_capacity - reserve)
            draft_mode = mode if draft_fim == "auto" and self.draft_infills else "none"
            tok = self.draft_info.tokenizer
            draft_extra = context_ids(tok, context, min(context_tokens, draft_budget // 2), self._encoded) if context_tokens else []
            draft_prompt = build_prompt(tok, draft_mode, prefix, suffix if draft_mode != "none" else "", draft_budget, draft_extra)
        return target_prompt, draft_prompt

    def complete(
        self,
        prefix: str,
        suffix: str = "",
        max_new_tokens: int = 64,
        params: SamplingParams = SamplingParams(),
        stop_strings: tuple[str, ...] = (),
        single_line: bool = False,
        deadline: float | None = None,
        cancelled: Callable[[], bool] | None = None,
        on_text: Callable[[str], None] | None = None,
        fim: str | None = None,
        document: str | None = None,
        context: tuple[str, ...] = (),
        context_tokens: int = 0,
        draft_fim: str = "auto",
        min_confidence: float = 0.0,
        candidates: int = 1,
        block_of: str | None = None,
    ) -> Generation:
        """The target model's completion at the cursor between `prefix` and `suffix`, in the KV
        lane of `document` (None: the lane of requests that name no document).

        `context`: chunks of other files (oldest first) placed before the prefix, within
        `context_tokens`. `min_confidence`: stop before the first token the target gives less
        probability. `candidates` > 1 (greedy only): up to that many suggestions in all, the
        others in `.alternatives`. `block_of`: the cursor's line so far; a multi-line completion
        stops once it leaves the cursor's block."""
        if not 1 <= max_new_tokens <= self.max_new_tokens:
            raise SpectabError(f"max new tokens must be 1..{self.max_new_tokens} for these models, got {max_new_tokens}")
        if not params.greedy and not 0.0 < params.top_p <= 1.0:
            raise SpectabError(f"top-p must be in (0, 1], got {params.top_p}")
        if not 0.0 <= min_confidence <= 1.0:
            raise SpectabError(f"minimum confidence must be a probability 0..1, got {min_confidence}")
        if not 1 <= candidates <= 16:
            raise SpectabError(f"candidates must be 1..16, got {candidates}")
        mode = resolve_fim(fim, self.tokenizer, self.target_info.name) if fim else self.fim
        stops = StopRules(max_new_tokens, stop_ids(self.tokenizer, mode), tuple(stop_strings), single_line, deadline,
                          cancelled, block_of=block_of, min_confidence=min_confidence)
        # whitespace before the cursor is healed: tokenizers merge a space or an indentation into
        # the word after it, so a prompt ending in it asks for an unusual split (SmolLM2 answers
        # `result = ` with digits); the prompt leaves it out and the first tokens spell it out
        kept = prefix.rstrip(" \t")
        heal = prefix[len(kept):]
        prefix = kept
        with self._lock:  # one generation at a time: the KV caches are shared state
            target_prompt, draft_prompt = self.prompts(prefix, suffix, max_new_tokens, mode, tuple(context),
                                                       context_tokens, draft_fim)
            self.last_prompt = target_prompt
            # a left-to-right prompt leaves out the code after the cursor; prompt lookup may copy it
            lane = self.lanes.get(document)
            drafter = lane.drafter if self.draft_info is not None else self.drafter
            reference = None
            if mode == "none" and suffix and isinstance(drafter, PromptLookupDrafter):
                reference = self.tokenizer.encode_infill(cut_suffix(self.tokenizer, suffix, self.options.context_tokens // 2))
            started = time.monotonic()
            greedy = generate(lane.target, target_prompt, drafter, self.tokenizer, params, stops,
                              self.draft_length, draft_prompt, on_text, reference=reference, heal=heal)
            if candidates > 1 and params.greedy and greedy.stats.stop_reason not in ("cancelled", "deadline"):
                # the alternatives together may take as long as the greedy suggestion took, no
                # more: an explicit request costs at most about twice a plain one
                share = self.options.alternatives_time_share
                if share is not None:
                    until = time.monotonic() + max((time.monotonic() - started) * share, 0.05)
                    stops = replace(stops, deadline=min(until, deadline) if deadline is not None else until)
                def run(branch: list[int], branch_stops: StopRules) -> Generation:
                    return generate(lane.target, target_prompt + branch, drafter, self.tokenizer, params, branch_stops,
                                    self.draft_length, draft_prompt + branch if draft_prompt else None, reference=reference)

                greedy.alternatives = alternatives(greedy, candidates - 1, stops, run,
                                                   lambda ids: self.tokenizer.decode(ids)[len(heal):])
            return greedy

    def forget(self, document: str) -> None:
        """Free the KV lane of a closed document."""
        with self._lock:
            self.lanes.forget(document)

    def reset_caches(self) -> None:
        self.lanes.reset()
