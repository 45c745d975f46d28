"""Fill-in-the-middle documents, made on the fly from left-to-right training windows.

CodeLlama's recipe: a share `fim_rate` of documents (0.9) is cut at two random character positions
into prefix, middle and suffix and laid out as the prompt the model will read at inference,
followed by the middle and <EOT>; half of those (`fim_spm_rate`) in SPM order:

    PSM: [BOS, <PRE>] + enc(prefix) + [<SUF>] + enc_infill(suffix) + [<MID>] + enc_infill(middle) + [<EOT>]
    SPM: [BOS, <PRE>, <SUF>] + enc_infill(suffix) + [<MID>] + enc(prefix) + enc_infill(middle) + [<EOT>]

The prompt part is `engine.prompts.build_prompt`, the function the engine builds infilling prompts
with, so training and inference cannot drift apart. The rest of the documents stay left to right.
Loss is taken on every position, prompt included, as CodeLlama did.

Every choice (which documents, which order, where to cut) comes from a generator seeded with the
run's seed and the global sequence number, so the sequence at each step is a function of the step
and the seed: a resumed run sees the same batches, on any number of ranks.
"""

from __future__ import annotations

import numpy as np

from engine.errors import SpectabError
from engine.prompts import FimTokens, build_prompt, fim_tokens
from engine.tokens import Tokenizer

NO_BUDGET = 1 << 30  # build_prompt never cuts: a training document is laid out whole


class FimTransform:
    """window [seq_len + 1] of packed documents (each ending with EOS) -> the same length, with a
    share of the documents in infilling order. The cut windows' first and last fragments count as
    documents, as in Megatron's FIM; a transformed window is cut back to length (the last
    document's end is lost) or, rarely, padded with EOS."""

    def __init__(self, tok: Tokenizer, fim_rate: float, spm_rate: float, seed: int):
        if not 0.0 <= fim_rate <= 1.0 or not 0.0 <= spm_rate <= 1.0:
            raise SpectabError(f"fim_rate and fim_spm_rate are shares 0..1, got {fim_rate} and {spm_rate}")
        fim = fim_tokens(tok)
        if fim is None:
            raise SpectabError(f"fim_rate {fim_rate} needs a tokenizer with infilling tokens, and {tok.name} has none; "
                               "prepare the data with CodeLlama's tokenizer (--tokenizer codellama/CodeLlama-7b-hf)")
        if tok.eos_id is None:
            raise SpectabError(f"tokenizer {tok.name} has no EOS token to separate documents")
        self.tok, self.fim, self.rate, self.spm_rate, self.seed = tok, fim, fim_rate, spm_rate, seed
        self.end = fim.end if fim.end is not None else tok.eos_id
        self.markers = {i for i in (fim.prefix, fim.suffix, fim.middle, fim.end) if i is not None}

    def __call__(self, window: np.ndarray, g: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, g, 0x46494D])  # "FIM"
        window = np.asarray(window, dtype=np.int64)
        eos = self.tok.eos_id
        cuts = np.flatnonzero(window == eos)
        parts, start = [], 0
        for end in list(cuts) + [len(window)]:
            doc = window[start:end]
            if len(doc) and rng.random() < self.rate:
                doc = np.asarray(self.document(doc.tolist(), rng), dtype=np.int64)
            parts.append(doc)
            if end < len(window):
                parts.append(window[end:end + 1])  # the EOS that ended it
            start = end + 1
        out = np.concatenate(parts)
        if len(out) >= len(window):
            return out[: len(window)]
        return np.concatenate([out, np.full(len(window) - len(out), eos, dtype=np.int64)])

    def document(self, ids: list[int], rng: np.random.Generator) -> list[int]:
        """One document's ids -> its infilling layout, cut where `rng` says. A document whose text
        spells an infilling marker (its tokens hold one) stays as it is: the layout would be
        ambiguous, and decoding drops special tokens."""
        if self.markers.intersection(ids):
            return ids
        text = _first(self.tok, self.tok.decode(ids))  # enc() adds the space back
        lo, hi, spm = self.plan(len(text), rng)
        return fim_document(self.tok, self.fim, text[:lo], text[lo:hi], text[hi:], spm) + [self.end]


    def plan(self, chars: int, rng: np.random.Generator) -> tuple[int, int, bool]:
        """Where to cut a document of `chars` characters, and whether in SPM order."""
        lo, hi = sorted(int(x) for x in rng.integers(0, chars + 1, size=2))
        return lo, hi, bool(rng.random() < self.spm_rate)


def fim_document(tok: Tokenizer, fim: FimTokens, prefix: str, middle: str, suffix: str, spm: bool) -> list[int]:
    """The engine's infilling prompt for (prefix, suffix), then the middle it should produce."""
    prompt = build_prompt(tok, "spm" if spm else "psm", prefix, suffix, NO_BUDGET)
    return prompt + tok.encode_infill(middle)


def split_fim(tok: Tokenizer, ids: list[int]) -> tuple[str, str] | None:
    """The inverse, for tests and inspection: a transformed document (up to its <EOT>) -> its order
    ("psm" or "spm") and the original text, or None when `ids` is not in infilling order."""
    fim = fim_tokens(tok)
    if fim is None or fim.prefix not in ids:
        return None
    body = ids[ids.index(fim.prefix) + 1:]
    end = fim.end if fim.end is not None else tok.eos_id
    if end in body:
        body = body[: body.index(end)]
    mid = body.index(fim.middle)
    if body[:1] == [fim.suffix]:  # SPM: <SUF> suffix <MID> prefix middle
        return "spm", _first(tok, tok.decode(body[mid + 1:])) + tok.decode(body[1:mid])
    suf = body.index(fim.suffix)  # PSM: prefix <SUF> suffix <MID> middle
    return "psm", _first(tok, tok.decode(body[:suf])) + tok.decode(body[mid + 1:]) + tok.decode(body[suf + 1:mid])


def _first(tok: Tokenizer, text: str) -> str:
    # enc() spelled a leading space before the text: drop it
    return text[1:] if tok.adds_prefix_space and text.startswith(" ") else text
