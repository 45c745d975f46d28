"""The engine's front door: text before and after the cursor in, the target's completion out.

A `Completer` owns the loaded models, their KV caches (kept between requests, so typing forward
reuses the cached prompt prefix), the drafter and the adaptive draft length.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Callable

import torch

from .cached_model import CachedModel
from .drafters import ModelDrafter, NoDrafter, PromptLookupDrafter
from .errors import SpectabError
from .loading import LoadedModel, load_model, load_tokenizer
from .profiles import Profile, choose_profile
from .prompts import build_prompt, cut_suffix, resolve_fim, stop_ids
from .sampling import SamplingParams
from .draft_policy import DraftLength
from .speculative import Generation, StopRules, generate
from .tokens import check_compatible

log = logging.getLogger("spectab")

DRAFT_KINDS = ("ngram", "none")


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


class Completer:
    def __init__(self, target: LoadedModel, draft: LoadedModel | str = "ngram", fim: str = "auto",
                 options: EngineOptions = EngineOptions(), profile: str = "custom"):
        self.target_info, self.options, self.profile = target, options, profile
        self.tokenizer = target.tokenizer
        self.fim = resolve_fim(fim, self.tokenizer, target.name)
        reserve = options.max_new_tokens_limit + options.k_max + 1
        self.target = CachedModel(target.model, options.context_tokens + reserve)
        # a model with a short context (a small trained draft used as target) still completes: at
        # most half its context is generated, the rest is prompt
        self.max_new_tokens = min(options.max_new_tokens_limit, self.target.capacity // 2 - options.k_max - 1)
        if self.max_new_tokens < 1:
            raise SpectabError(f"{target.name} has a context of only {self.target.capacity} tokens")
        self.draft_info: LoadedModel | None = None
        self.draft: CachedModel | None = None
        if isinstance(draft, LoadedModel):
            check_compatible(draft.tokenizer, target.tokenizer)
            self.draft_info = draft
            self.draft = CachedModel(draft.model, options.context_tokens + reserve)
            self.max_new_tokens = min(self.max_new_tokens, self.draft.capacity // 2 - options.k_max - 1)
            if self.max_new_tokens < 1:
                raise SpectabError(f"draft {draft.name} has a context of only {self.draft.capacity} tokens")
            self.drafter = ModelDrafter(self.draft, target.model.config.vocab_size, options.min_confidence)
        elif draft == "ngram":
            self.drafter = PromptLookupDrafter(options.ngram_max, options.ngram_min)
        elif draft == "none":
            self.drafter = NoDrafter()
        else:
            raise SpectabError(f"unknown draft '{draft}': give a model, ngram or none")
        self.draft_length = DraftLength(options.k, options.k_min, options.k_max, options.adaptive)
        self._lock = threading.Lock()

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
        log.debug("loading target %s", chosen.target)
        target_model = load_model(chosen.target, device, dtype, allow_download, quant)
        draft: LoadedModel | str = chosen.draft
        if chosen.draft not in DRAFT_KINDS:
            # a draft of another vocabulary is refused before its weights load (and pack)
            check_compatible(load_tokenizer(chosen.draft, allow_download), target_model.tokenizer)
            log.debug("loading draft %s", chosen.draft)
            device_name = str(target_model.model.embed.weight.device)
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
        return self.target.device

    def prompts(self, prefix: str, suffix: str, max_new_tokens: int, fim: str | None = None) -> tuple[list[int], list[int] | None]:
        """The target's prompt and, for a draft model, the draft's own left-to-right prompt."""
        mode = resolve_fim(fim, self.tokenizer, self.target_info.name) if fim else self.fim
        reserve = max_new_tokens + self.options.k_max + 1
        budget = min(self.options.context_tokens, self.target.capacity - reserve)
        target_prompt = build_prompt(self.tokenizer, mode, prefix, suffix if mode != "none" else "", budget)
        draft_prompt = None
        if self.draft is not None:
            draft_budget = min(self.options.context_tokens, self.draft.capacity - reserve)
            # the small draft was never trained on infilling: it reads the prefix left to right
            draft_prompt = build_prompt(self.draft_info.tokenizer, "none", prefix, "", draft_budget)
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
    ) -> Generation:
        """The target model's completion at the cursor between `prefix` and `suffix`."""
        if not 1 <= max_new_tokens <= self.max_new_tokens:
            raise SpectabError(f"max new tokens must be 1..{self.max_new_tokens} for these models, got {max_new_tokens}")
        if not params.greedy and not 0.0 < params.top_p <= 1.0:
            raise SpectabError(f"top-p must be in (0, 1], got {params.top_p}")
        mode = resolve_fim(fim, self.tokenizer, self.target_info.name) if fim else self.fim
        stops = StopRules(max_new_tokens, stop_ids(self.tokenizer, mode), tuple(stop_strings), single_line, deadline, cancelled)
        with self._lock:  # one generation at a time: the KV caches are shared state
            target_prompt, draft_prompt = self.prompts(prefix, suffix, max_new_tokens, mode)
            # a left-to-right prompt leaves out the code after the cursor; prompt lookup may copy it
            reference = None
            if mode == "none" and suffix and isinstance(self.drafter, PromptLookupDrafter):
                reference = self.tokenizer.encode_infill(cut_suffix(self.tokenizer, suffix, self.options.context_tokens // 2))
            return generate(self.target, target_prompt, self.drafter, self.tokenizer, params, stops,
                            self.draft_length, draft_prompt, on_text, reference=reference)

    def reset_caches(self) -> None:
        self.target.reset()
        if self.draft is not None:
            self.draft.reset()
