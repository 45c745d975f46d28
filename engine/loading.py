"""Finding and loading models: a Hugging Face hub id, a local Hugging Face folder, or a GGUF file.

Hub models are read from the local Hugging Face cache and downloaded (with a progress bar) only when
the caller allows it. GGUF files are dequantised once through transformers and the result is kept
as an ordinary Hugging Face folder under the platformdirs user cache dir, so the next load is a
plain safetensors read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import ModelConfig
from .devices import resolve_device, resolve_dtype
from .errors import SpectabError, first_line
from .model import Llama, hf_state_dict, load_hf_weights
from .choices import QUANT_MODES
from .tokens import Tokenizer

log = logging.getLogger("spectab")

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HUB_FILES = [
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer.model", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json",
]


@dataclass
class LoadedModel:
    name: str
    """What the user called it (hub id, path)."""
    folder: Path
    """The Hugging Face folder it was read from (for GGUF: the converted copy in the cache)."""
    model: Llama
    tokenizer: Tokenizer
    quant: str = "none"
    """How its weights run: none (float), int8, int4, or int4+int8 (some of each)."""

    @property
    def config(self) -> ModelConfig:
        return self.model.config


def cache_dir() -> Path:
    """Where spectab keeps conversions (SPECTAB_CACHE_DIR overrides the platformdirs default)."""
    override = os.environ.get("SPECTAB_CACHE_DIR")
    if override:
        return Path(override)
    from platformdirs import user_cache_path

    return user_cache_path("spectab")


def load_model(spec: str, device: str = "auto", dtype: str = "auto", allow_download: bool = False,
               quant: str = "none") -> LoadedModel:
    """Resolve `spec` to a local folder and load its weights and tokenizer; `quant` (auto, none,
    int8, int4) quantizes the weights for the CPU kernels (engine/quantized.py)."""
    dev = resolve_device(device)
    mode = resolve_quant(quant, dev, dtype)
    if mode != "none":
        return load_quantized(spec, mode, allow_download)
    folder = resolve(spec, allow_download)
    cfg = read_config(folder)
    dt = resolve_dtype(dtype, dev, cfg)
    model = build_model(cfg, dev, dt, weight_reader(folder))
    if dev.type == "cpu":
        model.cpu_layout()
    return LoadedModel(spec, folder, model, Tokenizer.load(folder, name=spec))


def resolve_quant(quant: str, device: torch.device, dtype: str = "auto") -> str:
    """The quantization that will run: `auto` is the CPU's packed weights (bfloat16 compute), and
    float wherever the kernels are CPU-only or a float dtype was asked for."""
    if quant not in QUANT_MODES:
        raise SpectabError(f"unknown quant '{quant}'; use {', '.join(QUANT_MODES)}")
    if quant == "auto":
        return "auto" if device.type == "cpu" and dtype in ("auto", "bfloat16") else "none"
    if quant != "none" and device.type != "cpu":
        raise SpectabError(f"quant {quant} runs on the CPU only for now; on {device} use quant none (or auto)")
    if quant != "none" and dtype not in ("auto", "bfloat16"):
        raise SpectabError(f"quant {quant} computes in bfloat16; drop dtype {dtype} or use quant none")
    return quant


def gguf_file(spec: str) -> Path | None:
    """The GGUF file `spec` names (a file, or a folder holding exactly one), else None."""
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix.lower() == ".gguf":
        return path
    if path.is_dir() and not (path / "config.json").is_file():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return ggufs[0]
    return None


def load_quantized(spec: str, mode: str, allow_download: bool) -> LoadedModel:
    """A GGUF file packed tensor by tensor (never through a float copy of the model), or a Hugging
    Face folder quantized from its float weights; either way cached under the cache dir."""
    from .gguf_tensors import GGUFWeights
    from .quantized import FloatWeights, build_quantized, packed_or_build

    path = gguf_file(spec)
    if path is not None:
        folder = cache_dir() / "packed" / f"{path.stem}-{file_key(path)}-{mode}"
        source = None
        if not (folder / "config.json").is_file() or not any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer.model")):
            source = GGUFWeights(path)
            cfg = ModelConfig.from_hf(source.config, source=str(path))
            tok = source.tokenizer()
            folder.mkdir(parents=True, exist_ok=True)
            tok.save_pretrained(str(folder))
            extra = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
            (folder / "config.json").write_text(json.dumps(cfg.to_hf() | extra, indent=2))
        cfg = read_config(folder)

        def build():
            src = source or GGUFWeights(path)
            log.info("packing %s once for the %s kernels; the result is cached in %s", path.name, mode, folder)
            return build_quantized(cfg, src, mode, progress=_progress(path.name))
    else:
        folder = resolve(spec, allow_download)
        cfg = read_config(folder)
        weights_folder = folder

        def build():
            log.info("quantizing %s once (%s); the result is cached under %s", spec, mode, cache_dir() / "packed")
            return build_quantized(cfg, FloatWeights(weight_reader(weights_folder)), mode, progress=_progress(spec))
    packed = cache_dir() / "packed" / f"{folder.name}-{folder_key(folder)}-{mode}.safetensors" if path is None \
        else folder / "model.safetensors"
    model = packed_or_build(cfg, packed, build)
    kinds = sorted(set(model.quant_kinds.values()))
    return LoadedModel(spec, folder, model, Tokenizer.load(folder, name=spec), "+".join(kinds))


def load_tokenizer(spec: str, allow_download: bool = False) -> Tokenizer:
    """A model's tokenizer without its weights (to check a draft before it is loaded)."""
    path = gguf_file(spec)
    if path is None:
        return Tokenizer.load(resolve(spec, allow_download), name=spec)
    from .gguf_tensors import GGUFWeights

    return Tokenizer(GGUFWeights(path).tokenizer(), spec)


def _progress(name: str):
    def report(done: int, total: int) -> None:
        if done == total or done % max(1, total // 4) == 0:
            log.info("packing %s: %d/%d projections", name, done, total)
    return report


def file_key(path: Path) -> str:
    stat = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]


def folder_key(folder: Path) -> str:
    parts = [str(folder.resolve())]
    for f in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        stat = f.stat()
        parts.append(f"{f.name}|{stat.st_size}|{stat.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def build_model(cfg: ModelConfig, device: torch.device, dtype: torch.dtype, get) -> Llama:
    # build on the meta device so a 7B model is never materialised twice (random init, then weights)
    with torch.device("meta"):
        model = Llama(cfg).to(dtype)
    model = model.to_empty(device=device)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.embed.weight
    load_hf_weights(model, get)
    return model.eval().requires_grad_(False)


def resolve(spec: str, allow_download: bool) -> Path:
    """A local Hugging Face folder for `spec` (converting a GGUF file, downloading a hub model)."""
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return convert_gguf(path)
        raise SpectabError(f"{spec} is a file but not a .gguf model; give a GGUF file, a Hugging Face folder or a hub id")
    if path.is_dir():
        if (path / "config.json").is_file():
            return path
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return convert_gguf(ggufs[0])
        raise SpectabError(f"{spec} is a folder without config.json (not a Hugging Face model folder)")
    if spec.lower().endswith(".gguf") or os.sep in spec and not HUB_ID.match(spec):
        raise SpectabError(f"model file {spec} does not exist")
    if HUB_ID.match(spec):
        cached = find_cached(spec)
        if cached is not None:
            return cached
        if allow_download:
            return download(spec)
        raise SpectabError(f"{spec} is not in the local Hugging Face cache; download it with `spectab models pull {spec}`")
    raise SpectabError(f"unknown model '{spec}': not a file, a folder, or a Hugging Face hub id (org/name)")


def find_cached(repo_id: str) -> Path | None:
    """The cached snapshot of `repo_id` if it is complete (config, tokenizer, every weight shard)."""
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # LocalEntryNotFoundError and friends: simply not cached
        return None
    return folder if missing_files(folder) == [] else None


def missing_files(folder: Path) -> list[str]:
    """What a model folder lacks to be loaded: config, tokenizer, weights (all shards)."""
    missing = [] if (folder / "config.json").is_file() else ["config.json"]
    if not any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer.model")):
        missing.append("tokenizer.json or tokenizer.model")
    for index_name, single in (("model.safetensors.index.json", "model.safetensors"), ("pytorch_model.bin.index.json", "pytorch_model.bin")):
        if (folder / index_name).is_file():
            shards = set(json.loads((folder / index_name).read_text())["weight_map"].values())
            return missing + sorted(s for s in shards if not (folder / s).is_file())
        if (folder / single).is_file():
            return missing
    return missing + ["model.safetensors (or pytorch_model.bin)"]


def download(repo_id: str) -> Path:
    """Download a hub model into the Hugging Face cache, with huggingface_hub's progress bars."""
    from huggingface_hub import HfApi, snapshot_download

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on"):
        raise SpectabError(f"cannot download {repo_id}: HF_HUB_OFFLINE is set; unset it or copy the model into the cache")
    log.info("downloading %s into the Hugging Face cache", repo_id)
    try:
        files = HfApi().list_repo_files(repo_id)
        weights = ["*.safetensors", "model.safetensors.index.json"] if any(f.endswith(".safetensors") for f in files) \
            else ["pytorch_model*.bin", "pytorch_model.bin.index.json"]
        folder = Path(snapshot_download(repo_id, allow_patterns=HUB_FILES + weights))
    except Exception as err:
        raise SpectabError(f"cannot download {repo_id}: {first_line(err)}") from err
    lacking = missing_files(folder)
    if lacking:
        raise SpectabError(f"{repo_id} downloaded but lacks {', '.join(lacking)}; is it a Llama causal LM?")
    return folder


def read_config(folder: Path) -> ModelConfig:
    try:
        hf = json.loads((folder / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SpectabError(f"cannot read {folder / 'config.json'}: {first_line(err)}") from err
    try:
        return ModelConfig.from_hf(hf, source=str(folder))
    except KeyError as err:
        raise SpectabError(f"{folder / 'config.json'} lacks {err.args[0]}; is it a Llama model?") from err


def weight_reader(folder: Path):
    """`get(hf_name) -> tensor`, reading lazily from safetensors shards (or .bin files)."""
    index = {}
    for name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / name).is_file():
            index = json.loads((folder / name).read_text())["weight_map"]
            break
    files = sorted(set(index.values())) or [
        f for f in ("model.safetensors", "pytorch_model.bin") if (folder / f).is_file()
    ][:1]
    if not files:
        raise SpectabError(f"{folder} has no model.safetensors or pytorch_model.bin")
    handles = {}

    def open_file(fname: str):
        if fname not in handles:
            if fname.endswith(".safetensors"):
                from safetensors import safe_open

                handles[fname] = safe_open(str(folder / fname), framework="pt")
            else:
                handles[fname] = torch.load(folder / fname, map_location="cpu", mmap=True, weights_only=True)
        return handles[fname]

    def get(name: str) -> torch.Tensor:
        fname = index.get(name, files[0])
        h = open_file(fname)
        try:
            return h.get_tensor(name) if fname.endswith(".safetensors") else h[name]
        except KeyError:
            raise SpectabError(f"{folder / fname} has no tensor '{name}'; is it a Llama model?") from None
        except Exception as err:
            if "not found" in str(err).lower() or "does not contain" in str(err).lower():
                raise SpectabError(f"{folder / fname} has no tensor '{name}'; is it a Llama model?") from None
            raise

    return get


def convert_gguf(path: Path) -> Path:
    """Dequantise a GGUF model once; return the cached Hugging Face folder."""
    folder = cache_dir() / "gguf" / f"{path.stem}-{file_key(path)}"
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return folder
    log.info("converting %s once (dequantising GGUF); the result is cached in %s", path.name, folder)
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        hf_tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        hf_model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    except Exception as err:
        raise SpectabError(f"cannot read GGUF file {path}: {first_line(err)}") from err
    cfg = ModelConfig.from_hf(hf_model.config.to_dict(), source=str(path))
    ours = build_model(cfg, torch.device("cpu"), torch.float32, hf_model.state_dict().__getitem__)
    del hf_model
    save_folder(ours, hf_tok, folder, extra_config={"bos_token_id": hf_tok.bos_token_id, "eos_token_id": hf_tok.eos_token_id},
                if_missing=True)
    return folder


def save_folder(model: Llama, hf_tokenizer, folder: Path, extra_config: dict | None = None, if_missing: bool = False) -> None:
    """Write a Hugging Face model folder atomically (a half-written folder never looks complete).
    `if_missing`: when another process wrote the folder meanwhile, keep its copy."""
    from safetensors.torch import save_file

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
    try:
        save_file(hf_state_dict(model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config = model.config.to_hf() | (extra_config or {})
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        hf_tokenizer.save_pretrained(str(tmp))
        if if_missing and (folder / "model.safetensors").is_file():
            return
        if folder.exists():
            shutil.rmtree(folder)  # a leftover without weights
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

