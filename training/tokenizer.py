"""The tokenizer of a training run: a folder with tokenizer files, a hub id, a .gguf file (a
vocabulary-only GGUF is enough), or a profile name (its target's tokenizer: train a draft for it)."""

from __future__ import annotations

import re
from pathlib import Path

from engine.errors import SpectabError, first_line
from engine.tokens import Tokenizer

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def load_tokenizer(spec: str) -> Tokenizer:
    if not spec:
        raise SpectabError("no tokenizer given: set --tokenizer (a folder, a hub id or a .gguf file)")
    from transformers import AutoTokenizer

    from engine.profiles import builtin_profiles

    profiles = builtin_profiles()
    if spec in profiles and not Path(spec).exists():
        from engine.loading import resolve

        spec = str(resolve(profiles[spec].target, allow_download=False))
    path = Path(spec).expanduser()
    try:
        if path.is_file() and path.suffix.lower() == ".gguf":
            hf = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        elif path.is_dir():
            hf = AutoTokenizer.from_pretrained(str(path))
        elif HUB_ID.match(spec):
            hf = AutoTokenizer.from_pretrained(spec)  # the hub cache, or a download
        else:
            raise SpectabError(f"tokenizer {spec} is not a folder, a .gguf file or a hub id")
    except SpectabError:
        raise
    except Exception as err:
        raise SpectabError(f"cannot load tokenizer {spec}: {first_line(err)}") from err
    return Tokenizer(hf, spec)
