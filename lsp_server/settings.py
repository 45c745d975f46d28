"""The server's settings: the keys every editor client sends, under the section `spectab`.

They arrive as `initializationOptions` and with `workspace/didChangeConfiguration`. Unknown keys and
bad values are reported (one message each) and the rest still applies.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from engine.choices import QUANT_MODES
from engine.errors import SpectabError
from engine.prompts import FIM_MODES

MULTILINE = ("auto", "always", "never")
ENGINE_APIS = ("openai", "infill")
DRAFT_FIM_MODES = ("auto", "none")


def _engine_ok(value: str) -> bool:
    from .backends.choose import check_engine

    try:
        check_engine(value)
        return True
    except SpectabError:
        return False


@dataclass(frozen=True)
class Settings:
    profile: str | None = None
    """`auto` (None), `codellama-7b` or `smollm2-135m`."""
    target: str | None = None
    """Overrides the profile's target: hub id, Hugging Face folder or .gguf file."""
    draft: str | None = None
    """Overrides the profile's draft: a model, `ngram` or `none`."""
    device: str = "auto"
    """auto, cpu, cuda, cuda:N, mps."""
    dtype: str = "auto"
    """auto, float32, bfloat16, float16."""
    maxNewTokens: int = 64
    """Most tokens one suggestion may have."""
    temperature: float = 0.0
    """0 = greedy (the default: the same text for the same context)."""
    debounceMs: int = 75
    """Wait this long after an automatic trigger before generating (explicit triggers do not wait)."""
    deadlineMs: int = 4000
    """After this long a request answers with the best safe part generated so far."""
    multiline: str = "auto"
    """auto: several lines only at the end of a line; always; never."""
    contextTokens: int = 1024
    """Prompt budget in tokens around the cursor (bigger: more context, slower first request)."""
    languages: tuple[str, ...] = ()
    """languageIds to complete in; empty = all."""
    fim: str = "auto"
    """Infilling prompt format: auto, psm, spm, none."""
    quant: str = "auto"
    """Weights: auto (on the CPU, a GGUF's own int4/int8 precision, the rest int8), none, int8, int4."""
    threads: int = 0
    """CPU threads for the models; 0 = the physical cores."""
    engine: str = "shared"
    """shared: one engine process for all your editors (started when absent); inprocess: the models
    load in this server; an http(s) URL: a remote server (see engineApi)."""
    engineApi: str = "openai"
    """For a URL engine: openai (/v1/completions) or infill (llama.cpp's /infill)."""
    engineModel: str = ""
    """For a URL engine: the model name to ask for; empty = the server's first (/v1/models)."""
    engineApiKeyEnv: str = ""
    """For a URL engine: the name of the environment variable that holds the API key."""
    kvLanes: int = 0
    """KV caches kept, one per document; 0 = as many as fit in half the free memory (1..16)."""
    idleMinutes: float = 30
    """A shared engine started by this server exits after this long with no editor connected."""
    extraContextTokens: int = 256
    """Token budget for chunks of the other open documents, placed before the prefix; 0 = none."""
    minConfidence: float = 0.3
    """A suggestion is cut before its first token the target gives less than this probability
    (one that keeps nothing is not shown); 0 = off."""
    candidates: int = 3
    """Most suggestions an explicit request returns (greedy first, then alternatives that branch
    where the greedy path was least sure); automatic requests get one."""
    draftFim: str = "auto"
    """auto: a draft model that can infill reads the target's infilling prompt; none: the draft
    reads the prefix left to right."""


# key -> (type check, value check, what a valid value is)
_RULES: dict[str, tuple[type | tuple[type, ...], Any, str]] = {
    "profile": ((str, type(None)), lambda v: True, "a profile name"),
    "target": ((str, type(None)), lambda v: v is None or bool(v.strip()), "a model"),
    "draft": ((str, type(None)), lambda v: v is None or bool(v.strip()), "a model, ngram or none"),
    "device": (str, lambda v: bool(v), "auto, cpu, cuda, cuda:N or mps"),
    "dtype": (str, lambda v: v in ("auto", "float32", "bfloat16", "float16"), "auto, float32, bfloat16 or float16"),
    "maxNewTokens": (int, lambda v: 1 <= v <= 512, "an integer 1..512"),
    "temperature": ((int, float), lambda v: 0 <= v <= 5, "a number 0..5"),
    "debounceMs": (int, lambda v: 0 <= v <= 5000, "an integer 0..5000"),
    "deadlineMs": (int, lambda v: 50 <= v <= 60000, "an integer 50..60000"),
    "multiline": (str, lambda v: v in MULTILINE, "auto, always or never"),
    "contextTokens": (int, lambda v: 64 <= v <= 16384, "an integer 64..16384"),
    "languages": ((list, tuple), lambda v: all(isinstance(x, str) for x in v), "a list of languageIds"),
    "fim": (str, lambda v: v in FIM_MODES, ", ".join(FIM_MODES)),
    "quant": (str, lambda v: v in QUANT_MODES, ", ".join(QUANT_MODES)),
    "threads": (int, lambda v: 0 <= v <= 256, "0 (the physical cores) or an integer 1..256"),
    "engine": (str, _engine_ok, "shared, inprocess or an http(s):// URL"),
    "engineApi": (str, lambda v: v in ENGINE_APIS, " or ".join(ENGINE_APIS)),
    "engineModel": (str, lambda v: True, "a model name"),
    "engineApiKeyEnv": (str, lambda v: v == "" or v.replace("_", "a").isalnum(), "the name of an environment variable"),
    "kvLanes": (int, lambda v: 0 <= v <= 256, "0 (automatic) or an integer 1..256"),
    "idleMinutes": ((int, float), lambda v: 0 <= v <= 10080, "a number of minutes 0..10080 (0 = never exit)"),
    "extraContextTokens": (int, lambda v: 0 <= v <= 4096, "an integer 0..4096 (0 = no other documents)"),
    "minConfidence": ((int, float), lambda v: 0 <= v <= 1, "a probability 0..1 (0 = off)"),
    "candidates": (int, lambda v: 1 <= v <= 8, "an integer 1..8"),
    "draftFim": (str, lambda v: v in DRAFT_FIM_MODES, " or ".join(DRAFT_FIM_MODES)),
}
MODEL_KEYS = ("profile", "target", "draft", "device", "dtype", "contextTokens", "fim", "quant",
              "engine", "engineApi", "engineModel", "engineApiKeyEnv", "kvLanes", "draftFim")
"""Changing one of these means building a new engine; the others apply to the next request."""


def unwrap(raw: Any) -> dict:
    """The `spectab` section of whatever a client sent: wrapped ({"spectab": {...}}), bare, or not
    there at all (other sections only: {})."""
    if not isinstance(raw, dict):
        return {}
    if isinstance(raw.get("spectab"), dict):
        return raw["spectab"]
    known = {f.name for f in fields(Settings)}
    return raw if any(key in known for key in raw) else {}


def apply(base: Settings, section: dict) -> tuple[Settings, list[str]]:
    """`base` updated with the valid keys of a `spectab` section (see `unwrap`); the problems, one
    line each."""
    known = {f.name for f in fields(Settings)}
    changes, problems = {}, []
    for key, value in section.items():
        if key not in known:
            problems.append(f"unknown setting spectab.{key} (ignored)")
            continue
        kind, ok, expected = _RULES[key]
        if isinstance(value, bool) or not isinstance(value, kind) or not ok(value):
            problems.append(f"setting spectab.{key} must be {expected}, not {value!r} (kept {getattr(base, key)!r})")
            continue
        if key == "languages":
            value = tuple(value)
        if key == "profile" and value == "auto":
            value = None
        if key in ("temperature", "idleMinutes", "minConfidence"):
            value = float(value)
        changes[key] = value
    return replace(base, **changes), problems


def model_changed(old: Settings, new: Settings) -> bool:
    return any(getattr(old, k) != getattr(new, k) for k in MODEL_KEYS)
