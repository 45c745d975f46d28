"""`spectab train prepare`: documents in, token shards out.

Sources are local files and folders (plain text and code: one document per file; .jsonl and
.parquet: one per row) or Hugging Face datasets by name, streamed. Each document becomes its tokens
followed by EOS (no BOS), as AMD-Llama-135m was trained. Every `val_every`-th document goes to the
validation split. Tokenisation runs in worker processes, in order, so the output is deterministic;
a manifest records how many documents are in finished shards, and a rerun resumes from there.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Iterator

import numpy as np

from engine.errors import SpectabError

from .shards import tokenizer_fingerprint, write_shard
from .tokenizer import load_tokenizer

log = logging.getLogger("spectab")

TEXT_SUFFIXES = {".txt", ".md", ".rst", ".py", ".pyi", ".c", ".h", ".cc", ".cpp", ".hpp", ".rs", ".go", ".java",
                 ".js", ".ts", ".tsx", ".jsx", ".sh", ".toml", ".yaml", ".yml", ".json", ".lua", ".el", ".rb", ".kt"}


@dataclass(frozen=True)
class HubRecipe:
    """How to read one of the datasets the AMD models were trained on."""
    name: str
    config: str | None = None
    data_dir: str | None = None
    split: str = "train"
    text_field: str = "text"
    drop: tuple[tuple[str, str], ...] = ()
    """(dotted field, value) pairs: documents where the field has that value are skipped."""


RECIPES = {
    # SlimPajama-627B without its RedPajama-Book subset (AMD-Llama-135m's pretraining)
    "cerebras/SlimPajama-627B": HubRecipe("cerebras/SlimPajama-627B", drop=(("meta.redpajama_set_name", "RedPajamaBook"),)),
    # Project Gutenberg (English books), added back instead
    "manu/project_gutenberg": HubRecipe("manu/project_gutenberg", split="en"),
    # the Python part of StarCoder's training data (AMD-Llama-135m-code's fine-tune)
    "bigcode/starcoderdata": HubRecipe("bigcode/starcoderdata", data_dir="python", text_field="content"),
}


def documents(source: str, text_field: str = "text") -> Iterator[str]:
    """The documents of one source, in a fixed order."""
    if source.startswith("hf:") or (source in RECIPES and not Path(source).exists()):
        yield from _hub_documents(source.removeprefix("hf:"))
        return
    path = Path(source).expanduser()
    if not path.exists():
        raise SpectabError(f"data source {source} does not exist (give a file, a folder, or hf:DATASET)")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file() and _wanted(p))
    if not files:
        raise SpectabError(f"{source} has no text, code, .jsonl or .parquet files")
    for f in files:
        yield from _file_documents(f, text_field)


def _wanted(p: Path) -> bool:
    return p.suffix.lower() in TEXT_SUFFIXES | {".jsonl", ".parquet"} and not any(part.startswith(".") for part in p.parts)


def _file_documents(path: Path, text_field: str) -> Iterator[str]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as err:
                        raise SpectabError(f"{path}:{n} is not JSON ({err.msg})") from None
                    text = row.get(text_field) if isinstance(row, dict) else None
                    if not isinstance(text, str):
                        raise SpectabError(f"{path}:{n} has no string field '{text_field}' (set --text-field)")
                    yield text
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise SpectabError("reading .parquet needs pyarrow: pip install pyarrow") from None
        table = pq.ParquetFile(path)
        if text_field not in table.schema_arrow.names:
            raise SpectabError(f"{path} has no column '{text_field}' (columns: {', '.join(table.schema_arrow.names)})")
        for batch in table.iter_batches(columns=[text_field]):
            yield from (t for t in batch.column(0).to_pylist() if isinstance(t, str))
    else:
        try:
            yield path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            log.info("skipping %s: not UTF-8 text", path)


def _hub_documents(name: str) -> Iterator[str]:
    try:
        from datasets import load_dataset
    except ImportError:
        raise SpectabError("streaming Hugging Face datasets needs the datasets package: pip install datasets") from None
    recipe = RECIPES.get(name, HubRecipe(name))
    try:
        stream = load_dataset(recipe.name, recipe.config, data_dir=recipe.data_dir, split=recipe.split, streaming=True)
    except Exception as err:
        raise SpectabError(f"cannot open dataset {name}: {str(err).splitlines()[0] if str(err) else type(err).__name__}") from err
    for row in stream:
        if any(_dotted(row, key) == value for key, value in recipe.drop):
            continue
        text = row.get(recipe.text_field)
        if isinstance(text, str):
            yield text


def _dotted(row: dict, key: str):
    for part in key.split("."):
        row = row.get(part) if isinstance(row, dict) else None
    return row


# -- tokenisation in worker processes ---------------------------------------------------------------

_worker_tok = None


def _init_worker(spec: str) -> None:
    global _worker_tok
    _worker_tok = load_tokenizer(spec)


def _encode_batch(texts: list[str]) -> list[np.ndarray]:
    eos = _worker_tok.eos_id
    return [np.asarray(_worker_tok.encode(t) + [eos], dtype=np.uint32) for t in texts]


def prepare(sources: list[str], out: Path, tokenizer: str, workers: int = 4, shard_tokens: int = 100_000_000,
            val_every: int = 1000, text_field: str = "text", batch_docs: int = 64, limit_docs: int = 0) -> dict:
    """Tokenize `sources` into `out` (resuming a previous run there); returns the manifest."""
    for source in sources:  # fail before anything is written
        if not (source.startswith("hf:") or source in RECIPES) and not Path(source).expanduser().exists():
            raise SpectabError(f"data source {source} does not exist (give a file, a folder, or hf:DATASET)")
    tok = load_tokenizer(tokenizer)
    if tok.eos_id is None:
        raise SpectabError(f"tokenizer {tokenizer} has no EOS token to end documents with")
    fingerprint = tokenizer_fingerprint(tok.pieces())
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    manifest = {
        "version": 1, "tokenizer": tokenizer, "fingerprint": fingerprint.hex(), "vocab_size": tok.vocab_size,
        "eos_id": tok.eos_id, "sources": sources, "val_every": val_every, "text_field": text_field,
        "docs_done": 0, "done": False, "shards": {"train": [], "val": []},
    }
    if manifest_path.exists():
        old = json.loads(manifest_path.read_text())
        for key in ("tokenizer", "fingerprint", "sources", "val_every", "text_field"):
            if old.get(key) != manifest[key]:
                raise SpectabError(f"{out} holds data prepared with another {key} ({old.get(key)!r}); "
                                   "use a new --out folder or delete this one")
        manifest = old
        if manifest["done"]:
            log.info("%s is already prepared (%d documents)", out, manifest["docs_done"])
            return manifest
        log.info("resuming %s after %d documents", out, manifest["docs_done"])

    docs = (d for src in sources for d in documents(src, text_field))
    skip = manifest["docs_done"]
    docs = islice(docs, skip, (limit_docs or None))
    buffers: dict[str, list[np.ndarray]] = {"train": [], "val": []}
    counts = {"train": 0, "val": 0}
    index = skip

    def flush(final: bool = False) -> None:
        for split in ("train", "val"):
            if buffers[split]:
                name = f"{split}-{len(manifest['shards'][split]):05d}.bin"
                tokens = np.concatenate(buffers[split])
                write_shard(out / name, tokens, tok.vocab_size, fingerprint)
                manifest["shards"][split].append({"file": name, "tokens": int(len(tokens))})
                buffers[split], counts[split] = [], 0
        manifest["docs_done"] = index
        manifest["done"] = final
        manifest["tokens"] = {s: sum(x["tokens"] for x in manifest["shards"][s]) for s in ("train", "val")}
        tmp = manifest_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, indent=1))
        tmp.replace(manifest_path)

    from tqdm import tqdm

    batches = _batched(docs, batch_docs)
    ctx = mp.get_context("spawn")  # fork would copy a tokenizer's threads into the workers
    with ctx.Pool(max(1, workers), initializer=_init_worker, initargs=(tokenizer,)) as pool, \
            tqdm(desc=f"tokenizing into {out}", unit=" docs", initial=skip) as bar:
        for encoded in pool.imap(_encode_batch, batches):
            for ids in encoded:
                split = "val" if val_every and index % val_every == 0 else "train"
                buffers[split].append(ids)
                counts[split] += len(ids)
                index += 1
                if counts["train"] >= shard_tokens:
                    flush()  # at a document boundary: a rerun resumes right after it
            bar.update(len(encoded))
    # a run cut short by limit_docs is resumable, not done
    flush(final=not (limit_docs and index >= limit_docs))
    return manifest


def _batched(it: Iterator[str], n: int) -> Iterator[list[str]]:
    while batch := list(islice(it, n)):
        yield batch
