"""Prompt formats against CodeLlama's reference layout, and cutting long files to a budget."""

import pytest

from engine.errors import SpectabError
from engine.prompts import build_prompt, fim_tokens, resolve_fim, stop_ids
from engine.tokens import Tokenizer


@pytest.fixture(scope="module")
def codellama(codellama_tokenizer_dir):
    return Tokenizer.load(codellama_tokenizer_dir)


@pytest.fixture(scope="module")
def llama(llama_tokenizer_dir):
    return Tokenizer.load(llama_tokenizer_dir)


def test_tokenizer_matches_llama_cpp_vectors(llama):
    # the fixture's own test vectors: inputs and expected ids (no BOS), from llama.cpp
    from .conftest import FIXTURES

    inputs = (FIXTURES / "ggml-vocab-llama-spm.gguf.inp").read_text().split("\n__ggml_vocab_test__\n")
    outputs = (FIXTURES / "ggml-vocab-llama-spm.gguf.out").read_text().split("\n")
    checked = 0
    for text, expected in zip(inputs, outputs):
        if text and expected.strip():
            assert llama.encode(text) == [int(x) for x in expected.split()], repr(text)
            checked += 1
    assert checked > 20


# Expected ids written out by hand from the Llama-2 vocabulary: 1 <s>, 32007 <PRE>, 32008 <SUF>,
# 32009 <MID>, 822 '▁def', 788 '▁add', 736 '▁return', 13 '\n', 1678 '▁▁▁', 921 '▁x', 2457 'return'.
def test_psm_matches_reference_layout(codellama):
    ids = build_prompt(codellama, "psm", "def add(a, b):\n    return ", "\n", 100)
    assert ids == [1, 32007, 822, 788, 29898, 29874, 29892, 289, 1125, 13, 1678, 736, 29871, 32008, 13, 32009]


def test_spm_matches_reference_layout(codellama):
    ids = build_prompt(codellama, "spm", "x = 1", " + y", 100)
    # [BOS, <PRE>, <SUF>] + enc_infill(suffix) + [<MID>] + enc(prefix)
    assert ids == [1, 32007, 32008, 718, 343, 32009, 921, 353, 29871, 29896]


def test_suffix_gets_no_implicit_leading_space(codellama):
    # 'return' glued to <SUF> is the piece 'return' (2457), not '▁return' (736)
    assert build_prompt(codellama, "psm", "", "return x", 100) == [1, 32007, 32008, 2457, 921, 32009]
    # a suffix that starts with a real space keeps exactly that one space: '▁+' (718)
    assert build_prompt(codellama, "psm", "x = 1", " + y", 100)[-3:] == [718, 343, 32009]


def test_auto_picks_infilling_only_where_the_tokens_exist(codellama, llama):
    assert resolve_fim("auto", codellama, "t") == "psm"
    assert resolve_fim("auto", llama, "d") == "none"
    with pytest.raises(SpectabError, match="no infilling tokens"):
        resolve_fim("spm", llama, "d")
    assert 32010 in stop_ids(codellama, "psm") and 2 in stop_ids(codellama, "psm")


def test_left_to_right_prompt_is_bos_and_prefix(llama):
    assert build_prompt(llama, "none", "def fib(n):", "ignored", 100) == [1, 822, 18755, 29898, 29876, 1125]


def test_starcoder_style_tokens(llama_tokenizer_dir):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(llama_tokenizer_dir))
    hf.add_special_tokens({"additional_special_tokens": ["<fim_prefix>", "<fim_middle>", "<fim_suffix>"]})
    tok = Tokenizer(hf, "star")
    fim = fim_tokens(tok)
    assert fim.family == "starcoder"
    ids = build_prompt(tok, "psm", "a = ", "\nb", 100)
    assert ids == [fim.prefix] + tok.encode("a = ") + [fim.suffix] + tok.encode_infill("\nb") + [fim.middle]


def long_file(n: int) -> tuple[str, str]:
    prefix = "".join(f"def function_{i}(x):\n    return x * {i}\n\n" for i in range(n)) + "def target(y):\n    return "
    suffix = "\n\n" + "".join(f"value_{i} = target({i})\n" for i in range(n))
    return prefix, suffix


@pytest.mark.parametrize("mode", ["psm", "spm", "none"])
@pytest.mark.parametrize("budget", [40, 200, 1000])
def test_long_files_are_cut_to_the_budget_keeping_the_nearest_text(codellama, mode, budget):
    prefix, suffix = long_file(300)
    ids = build_prompt(codellama, mode, prefix, suffix, budget)
    assert len(ids) <= budget
    text = codellama.decode(ids)
    assert "target(y):\n    return" in text  # the cursor's own line survives
    assert "function_0(" not in text  # the far start is cut
    if mode != "none" and budget >= 200:
        assert "value_0 = target(0)" in text and "value_299" not in text


def test_prefix_is_cut_at_a_line_boundary(codellama):
    prefix, suffix = long_file(300)
    ids = build_prompt(codellama, "psm", prefix, suffix, 300)
    kept = codellama.decode(ids[2: ids.index(32008)])[1:]  # [1:]: SentencePiece's dummy space
    assert len(kept) < len(prefix) and prefix.endswith(kept)
    assert prefix[len(prefix) - len(kept) - 1] == "\n", kept[:40]


def test_one_enormous_line_still_fits(codellama):
    prefix = "data = [" + ", ".join(str(i) for i in range(5000))
    ids = build_prompt(codellama, "psm", prefix, "]\n", 128)
    assert len(ids) <= 128 and codellama.decode(ids[: ids.index(32008)]).endswith(", 4998, 4999")




def _typing_prefill(tok, text: str, mode: str, budget: int, lines: int = 48) -> int:
    """Prompt ids an engine with a prefix cache prefills while the user types `lines` lines of
    `text` back, one after another, from its middle (each prompt less what it shares with the one
    before; the text after the typed lines is the suffix throughout)."""
    ends = [i + 1 for i, c in enumerate(text) if c == "\n"]
    typed = ends[len(ends) // 2: len(ends) // 2 + lines + 1]
    suffix = text[typed[-1]:]
    total, before = 0, []
    for end in typed:
        ids = build_prompt(tok, mode, text[:end], suffix, budget)
        assert len(ids) <= budget
        same = next((i for i, (a, b) in enumerate(zip(before, ids)) if a != b), min(len(before), len(ids)))
        total += len(ids) - same
        before = ids
    return total


@pytest.mark.parametrize("module", ["inspect", "ast", "argparse"])
@pytest.mark.parametrize("mode, share", [("psm", 0.7), ("spm", 0.5)])
def test_the_prefix_cut_stays_put_while_the_user_types(codellama, monkeypatch, module, mode, share):
    # real code not written here: a cut that moved with every line would cost the engine a whole
    # prefill per line instead of the new tokens (and, in PSM, the suffix after them)
    import importlib
    import inspect

    import engine.prompts as prompts

    text = inspect.getsource(importlib.import_module(module))
    anchored = _typing_prefill(codellama, text, mode, 1000)
    monkeypatch.setattr(prompts, "is_anchor", lambda line: False)
    per_line = _typing_prefill(codellama, text, mode, 1000)
    assert anchored <= share * per_line, (anchored, per_line)


def test_an_anchored_cut_keeps_most_of_the_budget(codellama):
    import inspect

    text = inspect.getsource(inspect)
    middle = text.index("\n", len(text) // 2) + 1
    ids = build_prompt(codellama, "none", text[:middle], "", 600)
    assert 600 - 16 * 12 <= len(ids) <= 600  # at most ANCHOR_REACH lines given up
    assert text[:middle].endswith(codellama.decode(ids[1:]).lstrip())
