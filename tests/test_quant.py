"""Quantized weights: GGUF blocks packed into torch's kernels, quantized models loaded from GGUF
files and Hugging Face folders, the packed cache, and losslessness against the quantized target."""

import logging

import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize, quantize

from engine.completer import Completer, EngineOptions
from engine.errors import SpectabError
from engine.gguf_tensors import SourceWeight, reverse_rope_permutation
from engine.loading import load_model, resolve_quant
from engine.model import hf_state_dict
from engine.quant import Int4Proj, Int8Proj, aligned, dequant_int4
from engine.quantized import FloatWeights, build_quantized, choose_kind, quantize_parts

from .conftest import hf_llama
from .gguf_files import rope_permute, write_llama_gguf
from .test_sampling import word_tokenizer  # noqa: F401  (a fixture)


def gguf_blocks(w: torch.Tensor, kind: str) -> tuple[SourceWeight, torch.Tensor]:
    """`w` quantized by gguf-py, as our loader sees it, and gguf-py's own dequantisation."""
    blocks = quantize(w.numpy(), GGMLQuantizationType[kind])
    ref = torch.from_numpy(dequantize(blocks, GGMLQuantizationType[kind])).float()
    return SourceWeight(tuple(w.shape), kind, _blocks=blocks), ref


@pytest.mark.parametrize("kind,packed_as", [("Q4_0", Int4Proj), ("Q4_1", Int4Proj), ("Q8_0", Int8Proj)])
def test_gguf_blocks_multiply_like_gguf_dequantisation(kind, packed_as):
    torch.manual_seed(0)
    w = torch.randn(96, 256) * 0.05
    source, ref_w = gguf_blocks(w, kind)
    if kind != "Q8_0":  # 4-bit blocks are repacked, not rounded again: the codes are the file's
        assert torch.equal(dequant_int4(*source.int4()), ref_w)
    proj = quantize_parts(choose_kind("auto", [source]), [source])
    assert isinstance(proj, packed_as)
    for rows in (1, 5, 40):  # decode, verify, and a prefill that takes the float copy when there is one
        x = torch.randn(rows, 256)
        want = x @ ref_w.T
        rel = ((proj(x) - want).abs().max() / want.abs().max()).item()
        # the kernels take bfloat16 input (8 bits of mantissa); Q8_0 is also re-scaled per row
        assert rel < 2e-2, (rows, rel)


def test_permuted_rows_stay_with_their_scales():
    torch.manual_seed(1)
    w = torch.randn(64, 64) * 0.05
    permuted = rope_permute(w.numpy(), 4)
    blocks = quantize(permuted, GGMLQuantizationType.Q4_1)
    rows = reverse_rope_permutation(64, 4)
    source = SourceWeight((64, 64), "Q4_1", _blocks=blocks, _rows=rows)
    ref = torch.from_numpy(dequantize(blocks, GGMLQuantizationType.Q4_1))[torch.from_numpy(rows)]
    assert torch.equal(dequant_int4(*source.int4()), ref) and torch.equal(source.float(), ref)
    assert (ref - w).abs().max() < 0.02  # the un-permutation restores the original row order


@pytest.mark.parametrize("kind,table", [("Q8_0", "q8"), ("Q4_0", "q4"), ("Q4_1", "q4"), ("F32", "bf16")])
def test_row_tables_read_rows_back_as_the_file_has_them(kind, table):
    from engine.row_table import RowTable

    torch.manual_seed(2)
    w = torch.randn(50, 128) * 0.05
    if kind == "F32":
        source, ref = SourceWeight(tuple(w.shape), kind, _float=w), w.to(torch.bfloat16).float()
    else:
        source, ref = gguf_blocks(w, kind)
    rows = RowTable.of(source)
    assert rows.kind == table
    assert torch.equal(rows(torch.arange(50)), ref)  # bit for bit what the float path reads
    ids = torch.tensor([[3, 49], [0, 3]])
    assert torch.equal(rows(ids), ref[ids])
    size = sum(t.numel() * t.element_size() for t in rows.buffers())
    assert size <= {"q8": 0.54, "q4": 0.32, "bf16": 1.0}[table] * w.numel() * 2  # against bfloat16


def tiny_hf(vocab=32000, hidden=64, layers=2, heads=4, kv=2, inter=256, tie=False, seed=5):
    return hf_llama(vocab, hidden, layers, heads, kv, inter, 1e4, 256, tie, seed=seed, std=0.06)


def q4k_blocks(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Valid Q4_K super-blocks (gguf-py cannot make them): small f16 scales, random codes."""
    rng = np.random.default_rng(seed)
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType.Q4_K]
    b = rng.integers(0, 256, size=(rows, cols // block, size), dtype=np.uint8)
    b[..., 0:2] = np.frombuffer(np.float16(0.002).tobytes(), dtype=np.uint8)  # d
    b[..., 2:4] = np.frombuffer(np.float16(0.003).tobytes(), dtype=np.uint8)  # dmin
    return b.reshape(rows, -1)


@pytest.fixture(scope="module")
def gguf_models(tmp_path_factory):
    """Small GGUF Llamas: all Q4_0 (plus a Q8_0 embedding), Q4_1, and one with a Q4_K down
    projection and F32 attention output."""
    root = tmp_path_factory.mktemp("gguf")
    hf = tiny_hf()

    def mixed(name, a):
        if ".ffn_down." in name:
            return ("RAW", "Q4_K", q4k_blocks(*a.shape))
        return "F32" if ".attn_output." in name else "Q4_1"

    return {
        "q4_0": write_llama_gguf(hf, root / "q4_0.gguf", lambda n, a: "Q8_0" if n == "token_embd.weight" else "Q4_0"),
        "q4_1": write_llama_gguf(hf, root / "q4_1.gguf", lambda n, a: "Q4_1"),
        "mixed": write_llama_gguf(hf, root / "mixed.gguf", mixed),
    }


def logits(loaded, ids):
    loaded.model.setup_cache(len(ids) + 1)
    with torch.inference_mode():
        return loaded.model(torch.tensor([ids]), 0)


IDS = [1, 822, 788, 29898, 29874, 29892, 289, 1125, 13, 1678, 736, 263, 718, 289, 13, 13, 1753, 1014]


@pytest.mark.parametrize("name,kinds", [("q4_0", {"int4"}), ("q4_1", {"int4"}), ("mixed", {"int4", "int8"})])
def test_a_gguf_model_loads_quantized_and_matches_its_float_path(gguf_models, name, kinds):
    floating = load_model(str(gguf_models[name]), "cpu", quant="none")  # dequantised through transformers
    packed = load_model(str(gguf_models[name]), "cpu", quant="auto")
    assert set(packed.model.quant_kinds.values()) == kinds and packed.quant == "+".join(sorted(kinds))
    if name == "mixed":  # the K-quant down projection is dequantised and re-quantized to int8
        assert {k for n, k in packed.model.quant_kinds.items() if n.endswith("w_down")} == {"int8"}
    a, b = logits(floating, IDS), logits(packed, IDS)
    rel = ((a - b).abs().max() / a.abs().max()).item()
    assert rel < 0.03, rel
    # a random model's logits are nearly flat, so a few near-ties flip under bfloat16 input
    assert (a.argmax(-1) == b.argmax(-1)).float().mean() >= 0.75
    assert packed.tokenizer.encode("def add(a, b):") == floating.tokenizer.encode("def add(a, b):")


def test_the_output_head_rescores_its_best_candidates_from_the_files_rows(gguf_models):
    """The q4_0 model: token_embd Q8_0, an untied Q4_0 output head. Its top candidates' logits
    are float32 products with the file's own rows; the rest are the int4 kernel's."""
    from gguf import GGUFReader

    packed = load_model(str(gguf_models["q4_0"]), "cpu", quant="auto")
    model = packed.model
    assert model.table_kinds == {"embed": "q8", "head_rows": "q4"}
    tensors = {t.name: t for t in GGUFReader(str(gguf_models["q4_0"])).tensors}
    head = torch.from_numpy(dequantize(np.asarray(tensors["output.weight"].data), GGMLQuantizationType.Q4_0)).float()
    embed = torch.from_numpy(dequantize(np.asarray(tensors["token_embd.weight"].data), GGMLQuantizationType.Q8_0)).float()
    assert torch.equal(model.embed(torch.tensor(IDS)), embed[IDS])
    normed = []
    hook = model.norm.register_forward_hook(lambda mod, args, out: normed.append(out[0]))
    got = logits(packed, IDS)
    hook.remove()
    h = normed[0]
    with torch.inference_mode():
        kernel = model.lm_head(h).float()
    top = kernel.topk(4, dim=-1).indices
    exact = torch.einsum("sh,skh->sk", h.double(), head[top].double()).float()
    torch.testing.assert_close(got.gather(-1, top), exact, rtol=1e-5, atol=1e-5)
    rest = torch.ones_like(got, dtype=torch.bool).scatter(-1, top, False)
    assert torch.equal(got[rest], kernel[rest])
    assert not torch.equal(got.gather(-1, top), kernel.gather(-1, top))  # bfloat16-rounded before
    again = load_model(str(gguf_models["q4_0"]), "cpu", quant="auto")  # from the packed cache
    assert again.model.table_kinds == model.table_kinds and torch.equal(logits(again, IDS), got)


def test_smollm2_quantized_agrees_with_its_float_path_on_real_code(smollm2_gguf, monkeypatch):
    """Real weights, real code: the Q4_1 GGUF at `auto` (int4 layers, a Q8_0 tied head re-scored from
    the embedding's rows) picks the float model's next token almost everywhere. Benchmark 9
    measures it on 4,000 positions; without re-scoring it was 96.8% on this machine."""
    from benchmarks.cpu_vs_llamacpp import code_prompts
    import engine.quant as quant_module
    from engine.cached_model import CachedModel

    monkeypatch.setattr(quant_module, "DENSE_MIN_ROWS", 1 << 62)  # every row through the decode kernels
    floating = load_model(str(smollm2_gguf), "cpu", quant="none")
    packed = load_model(str(smollm2_gguf), "cpu", quant="auto")
    assert packed.model.table_kinds == {"embed": "q8", "head_rows": "embed"}
    agree = n = 0
    with torch.inference_mode():
        for _, ids in code_prompts(floating.tokenizer, [400, 400]):
            a = CachedModel(floating.model, len(ids)).extend(ids, len(ids))
            b = CachedModel(packed.model, len(ids)).extend(ids, len(ids))
            agree, n = agree + int((a.argmax(-1) == b.argmax(-1)).sum()), n + len(ids)
    assert n >= 700 and agree / n >= 0.98, (agree, n)


def test_the_packed_model_is_cached_and_a_damaged_copy_rebuilt(gguf_models, caplog):
    first = load_model(str(gguf_models["q4_1"]), "cpu", quant="int4")
    packed = first.folder / "model.safetensors"
    assert packed.is_file()
    with caplog.at_level(logging.INFO, logger="spectab"):
        again = load_model(str(gguf_models["q4_1"]), "cpu", quant="int4")
    assert not [r for r in caplog.records if "packing" in r.getMessage()]  # read back, not rebuilt
    assert torch.equal(logits(first, IDS), logits(again, IDS))
    packed.write_bytes(packed.read_bytes()[: packed.stat().st_size // 2])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="spectab"):
        rebuilt = load_model(str(gguf_models["q4_1"]), "cpu", quant="int4")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unusable" in warnings[0] and "rebuilding" in warnings[0]
    assert torch.equal(logits(first, IDS), logits(rebuilt, IDS))


def test_the_int8_kernel_gets_aligned_tensors_from_the_cache_and_from_slices(gguf_models, monkeypatch):
    """torch 2.13's int8 kernel (its AVX-512 path, from 4 rows on) crashes on an input, weight or
    scale off a 32-byte boundary: the packed model read back from the cache (into buffers of its
    own, none copied again to align it) and a slice of activations reach the kernel aligned."""
    import engine.quantized as quantized

    first = load_model(str(gguf_models["mixed"]), "cpu", quant="auto")
    copies = []

    def counting(t):
        out = aligned(t)
        if out is not t:
            copies.append(t)
        return out

    monkeypatch.setattr(quantized, "aligned", counting)
    again = load_model(str(gguf_models["mixed"]), "cpu", quant="auto")  # read back from the cache
    assert not copies, f"{len(copies)} tensors copied to align them: they should be read into aligned buffers"
    misaligned = [n for n, t in again.model.named_buffers() if t is not None and t.data_ptr() % 64]
    assert not misaligned, misaligned
    assert torch.equal(logits(first, IDS), logits(again, IDS))  # 18 rows through the int8 down projections
    proj = next(m for m in again.model.modules() if isinstance(m, Int8Proj))
    x = torch.randn(9 * proj.d_in + 16, dtype=torch.bfloat16)[16:].view(9, proj.d_in)  # 32 bytes past a boundary
    assert x.data_ptr() % 64
    torch.testing.assert_close(proj(x), proj(x.clone()), rtol=0, atol=0)


def test_a_gguf_type_we_cannot_read_is_one_clear_error(tmp_path):
    rows, cols = 64, 64
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType.Q8_1]
    raw = np.zeros((rows, cols // block * size), dtype=np.uint8)
    path = write_llama_gguf(tiny_hf(inter=64, hidden=64), tmp_path / "q8_1.gguf",
                            lambda n, a: ("RAW", "Q8_1", raw) if n == "blk.0.attn_output.weight" else "Q8_0")
    with pytest.raises(SpectabError, match="cannot read GGUF tensor type Q8_1"):
        load_model(str(path), "cpu", quant="auto")


def test_quant_choices_and_devices():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert resolve_quant("auto", cpu) == "auto" and resolve_quant("auto", gpu) == "none"
    assert resolve_quant("auto", cpu, "float32") == "none"  # a float dtype asked for: float weights
    with pytest.raises(SpectabError, match="unknown quant 'int3'"):
        resolve_quant("int3", cpu)
    with pytest.raises(SpectabError, match="runs on the CPU only"):
        resolve_quant("int4", gpu)
    with pytest.raises(SpectabError, match="computes in bfloat16"):
        resolve_quant("int8", cpu, "float16")


# -- losslessness against the quantized target ----------------------------------------------------

PROMPTS = [
    ("def fibonacci(n):\n    if n < 2:\n        return n\n    return ", "\n\nprint(fibonacci(10))\n"),
    ("import os\n\nclass Config:\n    def __init__(self, path):\n        self.path = path\n        self.", "\n"),
    ("for i in range(10):\n    for j in range(10):\n        total += i * j\nfor i in range(10):\n    for", ""),
]


@pytest.fixture(scope="module")
def quantized_pair(tiny_models):
    return {(name, quant): load_model(str(tiny_models[name]), "cpu", quant=quant)
            for name in ("target", "same", "noisy") for quant in ("int8", "int4")}


def run(target, draft, fim):
    c = Completer(target, draft, fim, EngineOptions(context_tokens=512, max_new_tokens_limit=64, k=4, k_max=8))
    return [c.complete(prefix, suffix, 20).tokens for prefix, suffix in PROMPTS]


@pytest.mark.parametrize("target_quant", ["int8", "int4"])
@pytest.mark.parametrize("draft", ["same", "noisy", "ngram"])
@pytest.mark.parametrize("fim", ["psm", "none"])
def test_speculative_equals_the_quantized_targets_greedy_output(quantized_pair, target_quant, draft, fim):
    target = quantized_pair[("target", target_quant)]
    assert target.quant in ("int4+int8", "int8") and target.model.quant_kinds
    plain = run(target, "none", fim)
    drafter = quantized_pair[(draft, "int8")] if draft != "ngram" else "ngram"  # the draft in int8
    assert run(target, drafter, fim) == plain
    assert any(plain)


def test_drafts_are_taken_and_rejected_under_quantization(quantized_pair):
    # the equality above means something only if both branches of the verifier ran
    c = Completer(quantized_pair[("target", "int4")], quantized_pair[("noisy", "int8")], "none",
                  EngineOptions(context_tokens=512, max_new_tokens_limit=64, k=4, adaptive=False))
    proposed = accepted = 0
    for prefix, suffix in PROMPTS:
        s = c.complete(prefix, suffix, 20).stats
        proposed, accepted = proposed + s.draft_proposed, accepted + s.draft_accepted
    assert 0 < accepted < proposed


def quantized_copy(model, mode):
    return build_quantized(model.config, FloatWeights(hf_state_dict(model).__getitem__), mode)


@pytest.mark.parametrize("target_mode", ["int8", "int4"])
def test_sampling_follows_the_quantized_target(word_tokenizer, target_mode):
    from engine.cached_model import CachedModel
    from engine.drafters import ModelDrafter
    from engine.sampling import SamplingParams

    from .test_sampling import SAMPLES, VOCAB_DRAFT, VOCAB_TARGET, chi_square_p, exact_distribution, sample_many, small_model

    params = SamplingParams(temperature=1.0)
    target = quantized_copy(small_model(VOCAB_TARGET, 1), target_mode)
    draft = quantized_copy(small_model(VOCAB_DRAFT, 2), "int8")
    drafter = ModelDrafter(CachedModel(draft, 32), VOCAB_TARGET, min_confidence=0.0)
    counts = sample_many(target, drafter, word_tokenizer, params, steps=3, k=2)
    assert chi_square_p(counts, exact_distribution(target, params, 3), SAMPLES) > 1e-3


def test_the_packed_file_reader_reads_what_safetensors_wrote(tmp_path):
    from safetensors.torch import load_file, save_file

    from engine.safetensors_reader import read_metadata, read_tensors

    tensors = {"a": torch.randn(3, 5), "b": torch.randn(7).to(torch.bfloat16), "c": torch.randint(-8, 8, (2, 9), dtype=torch.int8),
               "d": torch.randint(0, 255, (33,), dtype=torch.uint8), "e": torch.zeros(0, 4)}
    path = tmp_path / "t.safetensors"
    save_file(tensors, str(path), metadata={"format": "x"})
    got, want = read_tensors(path), load_file(str(path))
    assert read_metadata(path) == {"format": "x"} and set(got) == set(want)
    for name, t in want.items():
        assert got[name].dtype == t.dtype and torch.equal(got[name], t) and got[name].data_ptr() % 64 == 0
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ValueError):
        read_tensors(path)
