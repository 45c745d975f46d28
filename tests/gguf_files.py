"""Writing small GGUF Llamas in the tests, as llama.cpp's converter lays them out: its tensor names,
q/k rows permuted for its rotary layout, the Llama-2 vocabulary from the fixtures, and each tensor
quantized by gguf-py's own quantizer (or given as raw blocks, for types gguf-py cannot make)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from engine.gguf_tensors import gguf_name

FIXTURE_VOCAB = Path(__file__).parent / "fixtures" / "ggml-vocab-llama-spm.gguf"


def rope_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's converter: rows of q (n_head = query heads) and k (kv heads) reordered."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_llama_gguf(hf_model, path: Path, qtype: Callable[[str, np.ndarray], str]) -> Path:
    """Write `hf_model` (a transformers LlamaForCausalLM over the Llama-2 vocabulary) to `path`;
    `qtype(gguf_name, array)` picks each 2-D tensor's GGML type name (F32, Q4_0, Q8_0, ...), or
    returns raw: `("RAW", type_name, blocks)` to store given bytes."""
    import gguf
    from gguf.quants import quantize

    cfg = hf_model.config
    vocab = gguf.GGUFReader(str(FIXTURE_VOCAB))
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("spectab-test")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(getattr(cfg, "rope_theta", None) or cfg.rope_parameters["rope_theta"])
    w.add_vocab_size(cfg.vocab_size)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    f = vocab.fields
    w.add_token_list([bytes(f["tokenizer.ggml.tokens"].parts[i]) for i in f["tokenizer.ggml.tokens"].data])
    w.add_token_scores([float(f["tokenizer.ggml.scores"].parts[i][0]) for i in f["tokenizer.ggml.scores"].data])
    w.add_token_types([int(f["tokenizer.ggml.token_type"].parts[i][0]) for i in f["tokenizer.ggml.token_type"].data])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    for hf, t in hf_model.state_dict().items():
        if hf == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        a = t.detach().float().numpy()
        name = gguf_name(hf)
        if ".attn_q." in name:
            a = rope_permute(a, cfg.num_attention_heads)
        elif ".attn_k." in name:
            a = rope_permute(a, cfg.num_key_value_heads)
        if a.ndim == 1:
            w.add_tensor(name, a.astype(np.float32))
            continue
        choice = qtype(name, a)
        if isinstance(choice, tuple):  # raw blocks of a type gguf-py cannot produce
            _, kind, blocks = choice
            w.add_tensor(name, blocks, raw_dtype=gguf.GGMLQuantizationType[kind])
            continue
        if choice == "F32":
            w.add_tensor(name, a.astype(np.float32))
        else:
            kind = gguf.GGMLQuantizationType[choice]
            w.add_tensor(name, quantize(a, kind), raw_dtype=kind)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
