"""Building a quantized Llama one tensor at a time, and keeping the packed result in the cache.

`build_quantized(cfg, weights, mode)` fills a Llama whose projections are `Int8Proj`/`Int4Proj`
(engine/quant.py), whose norms are in the activation dtype (engine/quant.py), and whose embedding is
a `RowTable` (engine/row_table.py) that keeps GGUF blocks as they are; the same table, or one of the
output head's own rows, re-scores the head's best candidates. `weights[hf_name]` gives one
`SourceWeight` (GGUF blocks or a float tensor), so peak memory is about one tensor plus the packed
model. Which kind each projection gets:
  - `int4`: int4 wherever the kernel takes the shape (input in groups of 32, output rows by 16; else int8);
  - `int8`: int8 everywhere;
  - `auto`: a GGUF's own precision where it maps directly (every part Q4_0/Q4_1 -> int4), int8 for
    everything else (Q8_0, K-quants, float safetensors).
Q4_0/Q4_1 blocks are repacked exactly; everything else is dequantised (that tensor only) and
quantized again.

The packed model is saved as one safetensors file with its kinds in the metadata, under the cache
dir keyed by source file and format; a damaged copy is rebuilt with one log line saying so.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .config import ModelConfig
from .safetensors_reader import read_metadata, read_tensors
from .errors import SpectabError, first_line
from .gguf_tensors import NATIVE_INT4, SourceWeight
from .model import Llama, Proj
from .row_table import RowTable, table_kind
from .devices import parameter_count
from .quant import (GROUP, INT4_ROWS, INT8_COLS, Int4Proj, Int8Proj, activation_dtype, aligned, int4_groups, int8_rows,
                    keep_dense, make_proj)

log = logging.getLogger("spectab")

FORMAT = "spectab-packed-5"  # 5: row tables (embedding, output head re-scoring); 4: float parts always float32
DENSE_MAX_PARAMS = 1e9
"""Models up to this size also keep a float32 copy of their quantized weights for prompt prefills
(engine/quant.py, DENSE_MIN_ROWS): SmolLM2-135M's 540 MB buy prefills 2-3x faster; a 7B model's
27 GB would not fit."""

# our projection -> its Hugging Face parts (fused along the output rows)
_PARTS = {
    "attn.wqkv": ("self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"),
    "attn.wo": ("self_attn.o_proj.weight",),
    "ffn.w_gate_up": ("mlp.gate_proj.weight", "mlp.up_proj.weight"),
    "ffn.w_down": ("mlp.down_proj.weight",),
}


def projections(cfg: ModelConfig) -> dict[str, tuple[str, ...]]:
    """Every projection of the model by our name, with the Hugging Face tensors it is made of."""
    out = {f"layers.{i}.{ours}": tuple(f"model.layers.{i}.{p}" for p in parts)
           for i in range(cfg.num_layers) for ours, parts in _PARTS.items()}
    out["lm_head"] = ("model.embed_tokens.weight",) if cfg.tie_word_embeddings else ("lm_head.weight",)
    return out


def choose_kind(mode: str, parts: list[SourceWeight]) -> str:
    d_in, d_out = parts[0].shape[1], sum(p.shape[0] for p in parts)
    if d_in % INT8_COLS:  # neither kernel takes this shape (no real model has it): float
        return "float"
    if mode == "int8" or d_in % GROUP or d_out % INT4_ROWS:  # shapes the int4 kernel cannot take
        return "int8"
    if mode == "int4":
        return "int4"
    return "int4" if all(p.kind in NATIVE_INT4 for p in parts) else "int8"


def quantize_parts(kind: str, parts: list[SourceWeight], dense: bool = False) -> nn.Module:
    """One projection from its parts; `dense`: also keep a float copy of the quantized weight."""
    d_in, d_out = parts[0].shape[1], sum(p.shape[0] for p in parts)
    proj = make_proj(kind, d_in, d_out)
    if kind == "float":
        proj.weight = nn.Parameter(torch.cat([p.float() for p in parts]).to(activation_dtype()), requires_grad=False)
        return proj
    if kind == "int8":
        q, scale = (torch.cat(t) for t in zip(*(int8_rows(p.float()) for p in parts)))
        proj.fill(q, scale)
    else:
        q, d, m = (torch.cat(t) for t in zip(*(p.int4() or int4_groups(p.float()) for p in parts)))
        proj.fill(q, d, m)
    if dense:
        keep_dense(proj, q)
    return proj


def skeleton(cfg: ModelConfig, kinds: dict[str, str], tables: dict[str, str] | None = None) -> Llama:
    """A Llama on the meta device whose projections are the given kinds and, with `tables` (as
    `finish` records them), whose embedding and head rows are row tables (empty, real buffers)."""
    with torch.device("meta"):
        model = Llama(cfg).to(activation_dtype())
        if tables:
            model.embed = RowTable(tables["embed"], cfg.vocab_size, cfg.hidden_size)
            rows = tables["head_rows"]
            model.head_rows = model.embed if rows == "embed" else None if rows == "none" else \
                RowTable(rows, cfg.vocab_size, cfg.hidden_size)
    model.act_dtype = activation_dtype()
    for name, kind in kinds.items():
        if kind == "float":  # stays a Proj; its weight is assigned from the file
            continue
        parent, _, attr = name.rpartition(".")
        old = model.get_submodule(name)
        assert isinstance(old, Proj), name
        d_out, d_in = old.weight.shape
        setattr(model.get_submodule(parent) if parent else model, attr, make_proj(kind, d_in, d_out))
    return model


def build_quantized(cfg: ModelConfig, weights, mode: str, progress: Callable[[int, int], None] | None = None) -> Llama:
    """`weights[hf_name] -> SourceWeight`; each projection is read, quantized and dropped in turn."""
    plan = projections(cfg)
    model = skeleton(cfg, {})
    dense = parameter_count(cfg) <= DENSE_MAX_PARAMS
    for n, (name, names) in enumerate(plan.items()):
        parts = [weights[p] for p in names]
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, quantize_parts(choose_kind(mode, parts), parts, dense))
        del parts
        if progress and not dense:  # a small model packs in seconds: no progress lines
            progress(n + 1, len(plan))
    model.embed = RowTable.of(weights["model.embed_tokens.weight"])
    model.head_rows = head_rows(cfg, model.embed, weights, dense)
    floats = {"norm.weight": "model.norm.weight"}
    for i in range(cfg.num_layers):
        floats[f"layers.{i}.attn_norm.weight"] = f"model.layers.{i}.input_layernorm.weight"
        floats[f"layers.{i}.ffn_norm.weight"] = f"model.layers.{i}.post_attention_layernorm.weight"
    for ours, hf in floats.items():
        assign(model, ours, weights[hf].float().to(model.get_parameter(ours).dtype))
    return finish(model)


def head_rows(cfg: ModelConfig, embed: RowTable, weights, small: bool) -> RowTable | None:
    """The rows that re-score the output head (engine/row_table.py): a tied head's are the
    embedding's; an untied one gets a table of its own where that is cheap (GGUF blocks kept as they
    are, a third to a half of the bfloat16 size) or the model small, and none otherwise (a 7B
    model's head from float or K-quant weights would add 250 MB)."""
    if cfg.tie_word_embeddings:
        return embed
    source = weights["lm_head.weight"]
    return RowTable.of(source) if small or table_kind(source) != "bf16" else None


class FloatWeights:
    """A Hugging Face folder's tensors (read lazily by `get`) as `SourceWeight`s."""

    def __init__(self, get: Callable[[str], torch.Tensor]):
        self.get = get

    def __getitem__(self, hf: str) -> SourceWeight:
        t = self.get(hf)
        return SourceWeight(tuple(t.shape), str(t.dtype).removeprefix("torch."), _float=t)


def assign(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    parent, _, attr = name.rpartition(".")
    module = model.get_submodule(parent)
    if attr in module._parameters:
        old = module._parameters[attr]
        assert old.shape == tensor.shape, f"{name}: shape {tuple(tensor.shape)}, expected {tuple(old.shape)}"
        module._parameters[attr] = nn.Parameter(tensor, requires_grad=False)
    elif module._buffers.get(attr) is None:  # an optional buffer (a float copy)
        module._buffers[attr] = tensor
    else:
        old = module._buffers[attr]
        assert old.shape == tensor.shape and old.dtype == tensor.dtype, \
            f"{name}: {tensor.dtype}{tuple(tensor.shape)}, expected {old.dtype}{tuple(old.shape)}"
        module._buffers[attr] = tensor


def finish(model: Llama) -> Llama:
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    assert not left, f"tensors never filled: {left[:3]}"
    for layer in model.layers:  # greedy output must not depend on how positions were batched
        layer.attn.exact_rows = True
    model.quant_kinds = {n: "int4" if isinstance(m, Int4Proj) else "int8" if isinstance(m, Int8Proj) else "float"
                         for n, m in model.named_modules() if isinstance(m, (Int4Proj, Int8Proj, Proj))}
    rows = model.head_rows
    model.table_kinds = {"embed": model.embed.kind,
                         "head_rows": "embed" if rows is model.embed else rows.kind if rows is not None else "none"}
    return model.eval().requires_grad_(False)


def save_packed(model: Llama, file: Path) -> None:
    """Write the packed tensors atomically (a half-written file never looks complete)."""
    from safetensors.torch import save_file

    tensors = {n: t.contiguous() for n, t in list(model.named_parameters()) + list(model.named_buffers())}
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=file.name + ".", dir=file.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata={"format": FORMAT, "kinds": json.dumps(model.quant_kinds),
                                            "tables": json.dumps(model.table_kinds), "torch": torch.__version__})
        os.replace(tmp, file)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_packed(cfg: ModelConfig, file: Path) -> Llama:
    """The model saved by `save_packed`; SpectabError when the file is missing, damaged or of
    another format (the caller rebuilds it)."""
    try:
        meta = read_metadata(file)
        if meta.get("format") != FORMAT or meta.get("torch") != torch.__version__:
            raise SpectabError(f"{file} is of another format ({meta.get('format')}, torch {meta.get('torch')})")
        model = skeleton(cfg, json.loads(meta["kinds"]), json.loads(meta["tables"]))
        tensors = read_tensors(file)
        names = set(tensors)
        expected = {n for n, _ in list(model.named_parameters()) + list(model.named_buffers())}
        expected |= {n for n in names if n.endswith(".dense")}  # optional float copies
        if names != expected:
            raise SpectabError(f"{file} lacks {sorted(expected - names)[:3]} or has extra tensors")
        for name in sorted(names):
            # read into buffers of our own, aligned for the int8 kernel (aligned() is the guard)
            assign(model, name, aligned(tensors.pop(name)))
    except SpectabError:
        raise
    except Exception as err:  # truncated or overwritten: the reader's errors, asserts
        raise SpectabError(f"{file} is damaged: {first_line(err)}") from err
    return finish(model)


def packed_or_build(cfg: ModelConfig, file: Path, build: Callable[[], Llama]) -> Llama:
    """Read the cached packed model, or build and cache it (rebuilding a damaged one)."""
    if file.is_file():
        try:
            return load_packed(cfg, file)
        except SpectabError as err:
            log.warning("the cached packed model is unusable (%s); rebuilding it", err)
    model = build()
    release_freed_memory()
    try:
        save_packed(model, file)
    except OSError as err:  # a full or read-only cache costs the next start time, nothing else
        log.warning("could not cache the packed model in %s: %s", file.parent, err)
    return model


def release_freed_memory() -> None:
    """Give the memory the packing freed back to the system: glibc keeps freed blocks of up to
    32 MB in its heap once large blocks have come and gone, and packing the 7B shape left 3 GB of
    them resident beside the 4.2 GB model."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        trim = None
    if trim is not None:
        trim(0)

