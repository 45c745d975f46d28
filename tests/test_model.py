"""Our Llama against transformers' LlamaForCausalLM: same logits, cached or not."""

import pytest
import torch

from engine.config import ModelConfig
from engine.loading import load_model
from engine.model import Llama, hf_state_dict, load_hf_weights

from .conftest import hf_llama


def pair(vocab, hidden, layers, heads, kv_heads, inter, tie, seed, capacity):
    """A tiny transformers Llama and ours with the same weights and a cache of `capacity`."""
    hf = hf_llama(vocab, hidden, layers, heads, kv_heads, inter, 1e4, 256, tie, seed=seed)
    model = Llama(ModelConfig.from_hf(hf.config.to_dict()))
    load_hf_weights(model, hf.state_dict().__getitem__)
    model.setup_cache(capacity)
    return hf, model


@pytest.mark.parametrize("kv_heads,tie", [(4, False), (2, True), (1, False)])
def test_logits_match_transformers_in_chunks(kv_heads, tie):
    hf, model = pair(300, 64, 2, 4, kv_heads, 172, tie, seed=kv_heads, capacity=64)
    ids = torch.randint(0, 300, (1, 21))
    with torch.no_grad():
        reference = hf(ids).logits[0]
        # prefill, a verify-sized chunk, single steps: every path through the cache
        pieces = [model(ids[:, :12], 0), model(ids[:, 12:18], 12), model(ids[:, 18:19], 18), model(ids[:, 19:], 19)]
    torch.testing.assert_close(torch.cat(pieces), reference, rtol=1e-4, atol=1e-4)


def test_rolled_back_positions_are_overwritten():
    hf, model = pair(100, 32, 1, 2, 2, 64, False, seed=5, capacity=32)
    ids = torch.randint(0, 100, (1, 10))
    with torch.no_grad():
        model(ids, 0)
        model(torch.randint(0, 100, (1, 5)), 6)  # rejected tokens at positions 6..10
        again = model(ids[:, 6:], 6)  # overwrite them: must equal a clean run
        clean = hf(ids).logits[0, 6:]
    torch.testing.assert_close(again, clean, rtol=1e-4, atol=1e-4)


def test_hf_state_dict_round_trips():
    hf, model = pair(100, 32, 2, 4, 2, 64, False, seed=6, capacity=8)
    ours = hf_state_dict(model)
    for name, tensor in hf.state_dict().items():
        assert torch.equal(ours[name], tensor), name


def test_tiny_target_folder_loads_with_its_tokenizer(tiny_models):
    loaded = load_model(str(tiny_models["target"]), device="cpu")
    assert loaded.config.vocab_size == 32016 and loaded.config.rope_theta == 1e6
    assert loaded.tokenizer.vocab_size == 32016


def test_smollm2_converted_weights_match_transformers(smollm2_gguf):
    from transformers import AutoModelForCausalLM

    floating = load_model(str(smollm2_gguf), device="cpu", quant="none")  # the float path
    hf = AutoModelForCausalLM.from_pretrained(str(floating.folder), dtype=torch.float32).eval()
    ids = torch.tensor([floating.tokenizer.encode("def fib(n):\n    if n < 2:\n        return n")])
    floating.model.setup_cache(64)
    with torch.no_grad():
        reference = hf(ids).logits[0]
        ours = floating.model(ids, 0)
    torch.testing.assert_close(ours, reference, rtol=1e-3, atol=1e-3)


def test_cpu_layout_keeps_the_function_and_the_exported_weights():
    hf, model = pair(300, 64, 2, 4, 2, 172, True, seed=9, capacity=32)
    ids = torch.randint(0, 300, (1, 9))
    with torch.no_grad():
        before = model(ids, 0)
        model.cpu_layout()
        after = model(ids, 0)
    assert model.layers[0].ffn.w_gate_up.transposed and not model.layers[0].ffn.w_down.transposed
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    for name, tensor in hf_state_dict(model).items():
        assert torch.equal(tensor, hf.state_dict()[name]), name


def test_training_forward_matches_transformers_on_a_batch():
    hf, model = pair(300, 64, 2, 4, 2, 172, False, seed=11, capacity=8)
    ids = torch.randint(0, 300, (3, 17))
    with torch.no_grad():
        torch.testing.assert_close(model.train_logits(ids), hf(ids).logits, rtol=1e-4, atol=1e-4)
