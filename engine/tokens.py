"""Tokenizer wrapper: encoding without surprises, decoding continuations, vocabulary checks."""

from __future__ import annotations

from pathlib import Path

from .errors import SpectabError, first_line

# Tokens that end a completion when a model emits them (looked up by name; absent ones are skipped).
END_TOKENS = (
    "</s>", "<|endoftext|>", "<|im_end|>", "<|end_of_text|>", "<|eot_id|>", "<|file_separator|>",
    "<file_sep>", "▁<EOT>", "<EOT>",
)

# CodeLlama's reference code encodes infilling text behind this character and drops the first two
# ids ('▁' and '☺'): SentencePiece's implicit leading space lands on the anchor, not on the text.
INFILL_ANCHOR = "☺"


class Tokenizer:
    """A Hugging Face tokenizer, with the few operations generation needs, all by token id."""

    def __init__(self, hf, name: str = "tokenizer"):
        self.hf = hf
        self.name = name
        self.vocab_size = len(hf)
        self.bos_id = hf.bos_token_id
        self.eos_id = hf.eos_token_id
        self.end_ids = {i for i in (self.token_id(t) for t in END_TOKENS) if i is not None}
        if self.eos_id is not None:
            self.end_ids.add(self.eos_id)
        # SentencePiece-style tokenizers add a '▁' (space) before the text; byte-level BPE does not.
        self.adds_prefix_space = hf.convert_ids_to_tokens(hf.encode("a", add_special_tokens=False))[0].startswith("▁")
        self._infill_anchor = (
            hf.encode(INFILL_ANCHOR, add_special_tokens=False) if self.token_id(INFILL_ANCHOR) is not None else None
        )
        first = hf.encode("a", add_special_tokens=True)
        self.adds_bos = self.bos_id is not None and len(first) > 1 and first[0] == self.bos_id
        self._decode_anchor = next(
            (i for i in (self.token_id(c) for c in (INFILL_ANCHOR, "a", "x")) if i is not None and self.hf.decode([i]) in (INFILL_ANCHOR, "a", "x")),
            None,
        )

    @classmethod
    def load(cls, folder: Path | str, name: str | None = None) -> "Tokenizer":
        from transformers import AutoTokenizer

        try:
            hf = AutoTokenizer.from_pretrained(str(folder))
        except Exception as err:  # transformers raises many kinds here; all mean "no usable tokenizer"
            raise SpectabError(f"cannot load a tokenizer from {folder}: {first_line(err)}") from err
        return cls(hf, name or str(folder))

    def token_id(self, piece: str) -> int | None:
        """The id of a token given by its vocabulary string, or None when the vocabulary lacks it."""
        i = self.hf.convert_tokens_to_ids(piece)
        if i is None or (i == self.hf.unk_token_id and piece != self.hf.unk_token):
            return None
        return int(i)

    def encode(self, text: str) -> list[int]:
        """Ids of `text` as the start of a segment (SentencePiece adds its leading space), no BOS."""
        if not text:
            return []
        if self.adds_prefix_space and self._infill_anchor is not None:
            # SentencePiece encodes '▁' + text. Some converted tokenizers (transformers' GGUF
            # reader among them) drop a space of text that already starts with one, so spell the
            # dummy space out behind the anchor, where no tokenizer touches it.
            return self.encode_infill(" " + text)
        return self.hf.encode(text, add_special_tokens=False)

    def encode_document(self, text: str) -> list[int]:
        """Ids of `text` as a whole document: with BOS where this tokenizer adds one."""
        ids = ([self.bos_id] if self.adds_bos else []) + self.encode(text)
        if not ids:
            # an empty document still needs one position to predict from
            start = self.bos_id if self.bos_id is not None else self.eos_id
            ids = [start] if start is not None else []
        return ids

    def encode_infill(self, text: str) -> list[int]:
        """Ids of `text` as a continuation of earlier text: no implicit leading space."""
        if not text:
            return []
        if not self.adds_prefix_space:
            return self.hf.encode(text, add_special_tokens=False)
        if self._infill_anchor is None:
            raise SpectabError(f"{self.name} adds a leading space but has no '{INFILL_ANCHOR}' token to strip it")
        ids = self.hf.encode(INFILL_ANCHOR + text, add_special_tokens=False)
        n = len(self._infill_anchor)
        assert ids[:n] == self._infill_anchor, "the infilling anchor merged with the text; report this input"
        return ids[n:]

    def decode(self, ids: list[int]) -> str:
        """Text of generated ids exactly as they continue the prompt (a leading space is kept)."""
        ids = [i for i in ids if i < self.vocab_size]
        if not ids:
            return ""
        if self._decode_anchor is None:
            return self.hf.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        text = self.hf.decode([self._decode_anchor] + ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return text[len(self.hf.decode([self._decode_anchor])):]

    @property
    def token_texts(self) -> list[str]:
        """Each id's text as a continuation (leading space kept), computed once."""
        if getattr(self, "_token_texts", None) is None:
            ids = range(self.vocab_size)
            if self._decode_anchor is None:
                texts = self.hf.batch_decode([[i] for i in ids], skip_special_tokens=True, clean_up_tokenization_spaces=False)
            else:
                head = len(self.hf.decode([self._decode_anchor]))
                texts = [t[head:] for t in self.hf.batch_decode([[self._decode_anchor, i] for i in ids],
                                                                 skip_special_tokens=True, clean_up_tokenization_spaces=False)]
            self._token_texts = texts
        return self._token_texts

    def starting_with(self, text: str) -> list[int]:
        """Ids whose text is a non-empty start of `text`, or starts with it and goes on with
        something other than a space or tab: the tokens a completion that must begin with exactly
        `text` (whitespace) may begin with."""
        cache = self.__dict__.setdefault("_starting_with", {})
        if text not in cache:
            # a token that spells `text` out and goes on with more blanks would indent deeper than
            # the user did (SmolLM2 offers 7 spaces + ` print` after `\n` for `    `): not allowed
            cache[text] = [i for i, t in enumerate(self.token_texts)
                           if t and (text.startswith(t) or (t.startswith(text) and t[len(text):][:1] not in (" ", "\t")))]
        return cache[text]

    def pieces(self) -> list[str]:
        return self.hf.convert_ids_to_tokens(list(range(self.vocab_size)))


def check_compatible(draft: Tokenizer, target: Tokenizer) -> None:
    """Refuse a draft whose token ids do not mean the same as the target's first ids."""
    if draft.vocab_size > target.vocab_size:
        raise SpectabError(
            f"draft tokenizer {draft.name} has {draft.vocab_size} tokens, more than the target's "
            f"{target.vocab_size}: the draft must use the target's vocabulary or a prefix of it"
        )
    for i, (d, t) in enumerate(zip(draft.pieces(), target.pieces())):
        if d != t:
            raise SpectabError(
                f"draft and target tokenizers differ at id {i} (draft {d!r}, target {t!r}): "
                "speculative decoding needs a draft trained on the target's vocabulary; use --draft ngram instead"
            )

