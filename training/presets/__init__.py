"""Named starting points for a run; one file per preset."""

from __future__ import annotations

from engine.errors import SpectabError

from ..config import TrainConfig
from . import amd_llama_135m, amd_llama_135m_code, amd_llama_135m_code_fim, tiny

PRESETS = {
    "amd-llama-135m": amd_llama_135m.config,
    "amd-llama-135m-code": amd_llama_135m_code.config,
    "amd-llama-135m-code-fim": amd_llama_135m_code_fim.config,
    "tiny": tiny.config,
}


def preset(name: str) -> TrainConfig:
    if name not in PRESETS:
        raise SpectabError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()
