"""The prompt text an OpenAI-compatible server gets: the model family's infilling markers spelled
as text, or the prefix alone, left to right.

The front has no tokenizer, so the format is chosen from the model's name and the server's own
tokenizer turns the markers into their special tokens. The budget is in characters:
lsp_server/context.py has already cut the prefix and suffix to a window at line boundaries.

The families and where their markers come from:
- CodeLlama 7b/13b (base and Instruct): `<PRE> {prefix} <SUF>{suffix} <MID>`, ending at `<EOT>`,
  the text form of the token layout in engine/prompts.py (CodeLlama's reference code). Only the
  7B and 13B models were trained to infill; the Python variants lack the infilling tokens.
- StarCoder, StarCoderBase, StarCoder2: `<fim_prefix>`, `<fim_suffix>`, `<fim_middle>` (their
  tokenizers' special tokens; the same family as engine/prompts.py's `starcoder`).
- Qwen2.5-Coder: `<|fim_prefix|>`, `<|fim_suffix|>`, `<|fim_middle|>` (its model card's
  fill-in-the-middle section).
- DeepSeek-Coder: `<｜fim▁begin｜>`, `<｜fim▁hole｜>`, `<｜fim▁end｜>` (its model card's code
  insertion example; the bars are full-width).
llama.cpp recognises the same spellings when it looks for a GGUF's infilling tokens
(src/llama-vocab.cpp). Anything else, SmolLM2 included (its 49152-token vocabulary has no
infilling tokens), is completed left to right.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.errors import SpectabError
from engine.prompts import FIM_MODES


@dataclass(frozen=True)
class Family:
    name: str
    prefix: str
    suffix: str
    middle: str
    end: str | None
    """Text that ends an infill when it is not the model's end-of-text token (which every server
    stops at by itself)."""
    spm: bool
    """Whether suffix-prefix-middle order is offered: CodeLlama's reference code has it and
    engine/prompts.py builds it for StarCoder-style tokens too; the Qwen2.5-Coder and DeepSeek-Coder
    model cards show prefix-suffix-middle only."""


CODELLAMA = Family("codellama", "<PRE>", "<SUF>", "<MID>", "<EOT>", True)
STARCODER = Family("starcoder", "<fim_prefix>", "<fim_suffix>", "<fim_middle>", None, True)
QWEN_CODER = Family("qwen2.5-coder", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", None, False)
DEEPSEEK_CODER = Family("deepseek-coder", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>", None, False)


def family_of(model: str) -> Family | None:
    """The infilling family a model's name (hub id, path or server alias) says, or None."""
    name = re.split(r"[/\\]", model.strip())[-1].lower().replace("_", "-")
    if "codellama" in name or "code-llama" in name:
        return None if re.search(r"python|34b|70b", name) else CODELLAMA  # those do not infill
    if "starcoder" in name:
        return STARCODER
    if re.search(r"qwen2\.?5-?coder", name):
        return QWEN_CODER
    if "deepseek-coder" in name:
        return DEEPSEEK_CODER
    return None


def resolve(model: str, fim: str) -> tuple[Family | None, str]:
    """(family, mode) for `fim` (auto, psm, spm, none): mode `none` means left to right. Raises
    SpectabError when the asked-for infilling cannot be done with this model."""
    if fim not in FIM_MODES:
        raise SpectabError(f"unknown infilling mode '{fim}'; choose one of {', '.join(FIM_MODES)}")
    family = family_of(model) if fim != "none" else None
    if fim == "auto":
        return family, "psm" if family else "none"
    if fim == "none":
        return None, "none"
    if family is None:
        raise SpectabError(f"spectab does not know the infilling markers of '{model}' (it knows CodeLlama, "
                           "StarCoder, Qwen2.5-Coder and DeepSeek-Coder); set spectab.fim to none or auto")
    if fim == "spm" and not family.spm:
        raise SpectabError(f"{family.name} models document prefix-suffix-middle infilling only; "
                           "set spectab.fim to psm or auto")
    return family, fim


def prompt_text(family: Family | None, mode: str, prefix: str, suffix: str) -> str:
    if family is None or mode == "none":
        return prefix
    if family is CODELLAMA:
        # the spaces are where CodeLlama's tokens carry theirs ('▁<SUF>', '▁<MID>') and where
        # SentencePiece puts the prefix's leading space
        if mode == "psm":
            return f"<PRE> {prefix} <SUF>{suffix} <MID>"
        return f"<PRE> <SUF>{suffix} <MID> {prefix}"
    if mode == "psm":
        return f"{family.prefix}{prefix}{family.suffix}{suffix}{family.middle}"
    return f"{family.prefix}{family.suffix}{suffix}{family.middle}{prefix}"


def stop_strings(family: Family | None, mode: str, single_line: bool) -> list[str]:
    stops = ["\n"] if single_line else []
    if family is not None and mode != "none" and family.end:
        stops.append(family.end)
    return stops
