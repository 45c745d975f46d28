"""Infilling drafts in the training package: the FIM transformation, vocabulary growth, FIM
distillation, acceptance by kind of cursor. CodeLlama's tokenizer, tiny models on the CPU."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.completer import Completer, EngineOptions
from engine.errors import SpectabError
from engine.loading import load_model, read_config, weight_reader
from engine.model import Llama, load_hf_weights
from engine.prompts import fim_tokens
from engine.tokens import Tokenizer
from training.data import Dataset, Mixture
from training.export import export
from training.fim import FimTransform, split_fim
from training.prepare import prepare
from training.presets import preset
from training.trainer import _load_initial, run
from training.vocab import grow_vocab

from .conftest import hf_llama, save_hf

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT / "engine" / n for n in ("prompts.py", "tokens.py", "sampling.py", "draft_policy.py", "lanes.py", "blocks.py")]


@pytest.fixture(scope="module")
def tok(codellama_tokenizer_dir) -> Tokenizer:
    return Tokenizer.load(codellama_tokenizer_dir)


@pytest.fixture(scope="module")
def code_corpus(tmp_path_factory, codellama_tokenizer_dir):
    """A few engine sources tokenized with CodeLlama's tokenizer."""
    out = tmp_path_factory.mktemp("fim-corpus")
    prepare([str(p) for p in SOURCES], out, str(codellama_tokenizer_dir), workers=1, shard_tokens=10_000_000, val_every=3)
    return out


def tiny_fim(tmp_path: Path, tokenizer: Path, corpus: Path, **changes):
    cfg = replace(preset("tiny"), model=replace(preset("tiny").model, vocab_size=32016), tokenizer=str(tokenizer),
                  data=(str(corpus),), out_dir=str(tmp_path / "run"), seq_len=64, global_batch_tokens=4 * 64,
                  micro_batch=2, max_tokens=12 * 4 * 64, warmup_steps=3, lr=5e-3, min_lr=5e-4, eval_every=0,
                  eval_batches=2, ckpt_every=0, log_every=100, fim_rate=0.9)
    return replace(cfg, **changes)


def engine_prompt(completer: Completer, prefix: str, suffix: str) -> list[int]:
    return completer.prompts(prefix, suffix, 8)[0]


def test_fim_documents_decode_back_and_lay_out_as_the_engine_prompts(tok, tiny_models):
    """Every transformed document decodes back to the original; its prompt part is the engine's
    own infilling prompt (PSM and SPM) for the same prefix and suffix, then the middle and <EOT>."""
    fim = fim_tokens(tok)
    t = FimTransform(tok, 1.0, 0.5, seed=7)
    target = load_model(str(tiny_models["target"]), "cpu", quant="none")
    engines = {m: Completer(target, "none", m, EngineOptions(context_tokens=4096)) for m in ("psm", "spm")}
    docs = [p.read_text()[:1500] for p in SOURCES] + ["x", "def f():\n\treturn 'é ☺ 名'\n"]
    orders = set()
    for k, doc in enumerate(docs * 4):
        ids = tok.encode(doc)
        out = t.document(ids, np.random.default_rng(k))
        if t.markers.intersection(ids):  # prompts.py spells the markers (and encodes to them): left to right
            assert out == ids and "▁<" in doc
            continue
        lo, hi, spm = t.plan(len(doc), np.random.default_rng(k))
        prefix, middle, suffix = doc[:lo], doc[lo:hi], doc[hi:]
        order, text = split_fim(tok, out)
        # with an empty prefix PSM and SPM are the same ids
        assert text == doc and (order == ("spm" if spm else "psm") or not prefix)
        orders.add(order)
        assert out == engine_prompt(engines["spm" if spm else "psm"], prefix, suffix) + tok.encode_infill(middle) + [fim.end]
        # and as CodeLlama's reference code spells it (fixtures/README.md)
        head = [tok.bos_id, fim.prefix]
        if spm:
            assert out == head + [fim.suffix] + tok.encode_infill(suffix) + [fim.middle] + tok.encode(prefix) + tok.encode_infill(middle) + [fim.end]
        else:
            assert out == head + tok.encode(prefix) + [fim.suffix] + tok.encode_infill(suffix) + [fim.middle] + tok.encode_infill(middle) + [fim.end]
    assert orders == {"psm", "spm"}


def test_the_share_of_fim_documents_follows_fim_rate_and_the_rest_stay(tok):
    eos = tok.eos_id
    docs = [tok.encode(f"value_{i} = compute({i * 7}, name='item {i}', scale={i / 3:.4f})  # entry\n") for i in range(400)]
    texts = {tok.decode(d) for d in docs}
    window = np.concatenate([np.asarray(d + [eos]) for d in docs])
    for rate, spm_rate in ((0.9, 0.5), (0.3, 0.0)):
        t = FimTransform(tok, rate, spm_rate, seed=3)
        fim_docs = spm = plain = 0
        for g in range(3):
            out = t(window, g).tolist()
            assert len(out) == len(window)
            frags = np.split(np.asarray(out), np.flatnonzero(np.asarray(out) == eos))[:-1]  # the last one may be cut
            for frag in frags:
                frag = [int(i) for i in frag if i != eos]
                split = split_fim(tok, frag)
                if split is None:
                    plain += 1
                    assert tok.decode(frag) in texts  # left to right, untouched
                else:
                    fim_docs += 1
                    spm += split[0] == "spm"
        share = fim_docs / (fim_docs + plain)
        assert abs(share - rate) < 0.05, (rate, share)
        # (an empty prefix, 2 % of these documents, makes PSM ids that read as SPM)
        assert abs(spm / fim_docs - spm_rate) < 0.06, (spm_rate, spm / fim_docs)
    assert np.array_equal(FimTransform(tok, 0.0, 0.5, seed=3)(window, 0), window)


def test_fim_batches_depend_on_step_and_seed_only_and_resume_exactly(tmp_path, tok, codellama_tokenizer_dir, code_corpus):
    ds = Dataset(code_corpus, "train", 64)
    mix = lambda seed: Mixture([ds], [1.0], seed, FimTransform(tok, 0.9, 0.5, seed))  # noqa: E731
    whole = mix(1).batch(0, 8)
    assert torch.equal(torch.cat([mix(1).batch(0, 4), mix(1).batch(4, 4)]), whole)  # two ranks' halves = one rank
    assert torch.equal(mix(1).batch(0, 8), whole)
    assert not torch.equal(mix(2).batch(0, 8), whole)
    assert (whole == fim_tokens(tok).prefix).any() and whole.shape == (8, 65)
    # an interrupted FIM run, resumed, logs the same losses as one that ran through
    straight = run(tiny_fim(tmp_path / "a", codellama_tokenizer_dir, code_corpus))
    cfg = tiny_fim(tmp_path / "b", codellama_tokenizer_dir, code_corpus, ckpt_every=5)
    first = run(cfg, stop_after=5)
    rest = run(cfg, resume=True)
    assert [l.loss for l in first + rest] == [l.loss for l in straight]
    with pytest.raises(SpectabError, match="was written with fim_rate=0.9"):
        run(replace(cfg, fim_rate=0.5), resume=True)


def test_fim_needs_infilling_tokens(tmp_path, llama_tokenizer_dir):
    with pytest.raises(SpectabError, match="needs a tokenizer with infilling tokens.*CodeLlama"):
        FimTransform(Tokenizer.load(llama_tokenizer_dir), 0.9, 0.5, 1)


@pytest.fixture(scope="module")
def small_draft(tmp_path_factory, llama_tokenizer_dir) -> Path:
    """A 32000-token draft, as AMD-Llama-135m-code is (the tiny preset's shape)."""
    m = preset("tiny").model
    hf = hf_llama(32000, m.hidden_size, m.num_layers, m.num_heads, m.num_kv_heads, m.intermediate_size, m.rope_theta,
                  m.max_position_embeddings, False, seed=11, std=0.05)
    return save_hf(hf, llama_tokenizer_dir, tmp_path_factory.mktemp("small") / "draft")


def test_a_grown_vocabulary_keeps_the_logits_and_exports_a_draft_for_codellama(tmp_path, small_draft, tiny_models,
                                                                             codellama_tokenizer_dir, code_corpus):
    original = load_trained_like(small_draft)
    grown = _load_initial(Llama(replace(original.config, vocab_size=32016)), str(small_draft), str(codellama_tokenizer_dir))
    assert grown.config.vocab_size == 32016
    ids = torch.randint(0, 32000, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        old, new = original.train_logits(ids), grown.train_logits(ids)
        torch.testing.assert_close(new[..., :32000], old, rtol=1e-5, atol=1e-5)
        for name in ("embed", "lm_head"):
            w = getattr(grown, name).weight
            torch.testing.assert_close(w[32000:], w[:32000].mean(0).expand(16, -1))
    assert torch.equal(grow_vocab(original, 32016).embed.weight, grown.embed.weight)
    # train it a few steps with FIM and export: the engine takes it as a draft for a 32016-token
    # target, and as an infilling one (it reads the target's own prompt)
    cfg = tiny_fim(tmp_path, codellama_tokenizer_dir, code_corpus, model=grown.config, init_from=str(small_draft),
                   vocab_from=str(codellama_tokenizer_dir), max_tokens=3 * 4 * 64)
    logs = run(cfg)
    assert len(logs) == 3 and all(np.isfinite(l.loss) for l in logs)
    folder = export(Path(cfg.out_dir), tmp_path / "exported")
    target = load_model(str(tiny_models["target"]), "cpu", quant="none")
    draft = load_model(str(folder), "cpu", quant="none")
    c = Completer(target, draft, "psm", EngineOptions(context_tokens=256, k=2, adaptive=False))
    assert draft.tokenizer.vocab_size == 32016 and c.draft_infills
    target_prompt, draft_prompt = c.prompts("def f(x):\n    return ", "\n", 8)
    assert draft_prompt == target_prompt
    c.complete("def f(x):\n    return ", "\n", 8)
    with pytest.raises(SpectabError, match="has 32016 tokens; set --model.vocab_size 32016"):
        _load_initial(Llama(original.config), str(small_draft), str(codellama_tokenizer_dir))
    with pytest.raises(SpectabError, match="set both"):
        run(replace(cfg, init_from="", out_dir=str(tmp_path / "bad")))


def load_trained_like(folder: Path):
    """The engine's Llama with a folder's weights, in float32, for training-side comparisons."""
    model = Llama(read_config(folder))
    load_hf_weights(model, weight_reader(folder))
    return model.eval()


def test_distillation_reads_fim_documents(tmp_path, tiny_models, codellama_tokenizer_dir, code_corpus):
    """The teacher (a 32016-token target) reads the same FIM sequences as the draft."""
    cfg = tiny_fim(tmp_path, codellama_tokenizer_dir, code_corpus, teacher=str(tiny_models["target"]),
                   max_tokens=4 * 4 * 64, distill_weight=0.5)
    logs = run(cfg)
    assert len(logs) == 4 and all(np.isfinite(l.loss) for l in logs) and logs[-1].loss < logs[0].loss


# -- acceptance: a FIM-trained draft against a FIM-trained target ---------------------------------

NAMES = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo", "lima",
         "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra", "tango", "uniform", "victor", "whiskey",
         "xray", "yankee", "zulu", "apple", "berry", "cherry", "grape", "lemon", "mango"]


def small_tokenizer(out: Path) -> Path:
    """Characters, 32 whole-word names and CodeLlama's four infilling markers (136 ids). Three
    models have to learn here: with CodeLlama's 32016-row output head they would cost 200x the
    compute, and the other tests pin the real tokenizer's layout."""
    import string

    from tokenizers import AddedToken, decoders, models
    from tokenizers import Tokenizer as Raw
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>"] + list(string.printable[:95]) + ["\n", "☺"])}
    raw = Raw(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    raw.decoder = decoders.Fuse()
    raw.add_tokens([AddedToken(n, normalized=False) for n in NAMES])
    raw.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("▁<PRE>", "▁<SUF>", "▁<MID>", "▁<EOT>")])
    PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>").save_pretrained(str(out))
    return out


def names_document(r) -> str:
    """A line of 8 random names, the same line again: code after a cursor in the first line says
    what comes next, code before it does not."""
    line = "".join(r.sample(NAMES, 8))
    return f"#\n{line}\n{line}\n#\n"


def test_a_fim_trained_draft_is_accepted_more_often_at_infilling_cursors(tmp_path):
    """The same draft shape trained for the same steps on the same data, with FIM and left to
    right, against a target trained with FIM, at cursors in the first line (the second copy after
    the cursor): the FIM draft reads the target's prompt and agrees with it far more often."""
    import json
    import random

    from engine.config import ModelConfig
    from training.evaluate import completer, measure, run_eval

    tokdir = small_tokenizer(tmp_path / "tok")
    r = random.Random(0)
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": names_document(r)}) + "\n" for _ in range(2000)))
    corpus = tmp_path / "corpus"
    prepare([str(tmp_path / "docs.jsonl")], corpus, str(tokdir), workers=1, shard_tokens=10**8, val_every=10)
    shape = ModelConfig(vocab_size=136, hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=2, head_dim=32,
                        intermediate_size=172, max_position_embeddings=256)
    draft_shape = replace(shape, hidden_size=32, head_dim=16, intermediate_size=86)
    base = replace(preset("tiny"), model=shape, tokenizer=str(tokdir), data=(str(corpus),), seq_len=64,
                   global_batch_tokens=8 * 64, micro_batch=8, max_tokens=100 * 8 * 64, warmup_steps=10, lr=5e-3,
                   min_lr=5e-4, eval_every=0, eval_batches=1, ckpt_every=0, log_every=1000)
    runs = {"target": replace(base, out_dir=str(tmp_path / "target"), fim_rate=0.9, seed=1),
            "fim": replace(base, model=draft_shape, out_dir=str(tmp_path / "fim"), fim_rate=0.9, seed=2),
            "ltr": replace(base, model=draft_shape, out_dir=str(tmp_path / "ltr"), fim_rate=0.0, seed=2)}
    for cfg in runs.values():
        run(cfg)
    target = str(export(Path(runs["target"].out_dir), tmp_path / "target-export"))
    cursors = []
    for seed in (99, 1, 2):
        r = random.Random(seed)
        for _ in range(16):
            names = r.sample(NAMES, 8)
            cursors.append(("#\n" + "".join(names[:2]), "\n" + "".join(names) + "\n#\n"))
    scores = {}
    for name in ("fim", "ltr"):
        c = completer(export(Path(runs[name].out_dir), tmp_path / f"{name}-export"), target, 10, 4)
        scores[name] = measure(c, cursors, 10, "auto" if name == "fim" else "none")
    assert scores["fim"]["draft_prompt"] == "infilling" and scores["ltr"]["draft_prompt"] == "left to right"
    assert scores["fim"]["drafted"] > 0 and scores["ltr"]["drafted"] > 0
    # after 100 steps the target has learned the layout (mostly: <EOT> soon after <MID>) more than
    # copying from the suffix; the left-to-right draft never saw either and matches none of it
    # (measured: 16/192 drafts accepted vs 0/192; per 16 cursors 0-8 of 64 vs 0)
    assert scores["fim"]["accepted"] > scores["ltr"]["accepted"]
    assert scores["fim"]["acceptance"] > scores["ltr"]["acceptance"] + 0.05, scores
    # `spectab train eval` reports both kinds of cursor, each draft reading its own kind of prompt
    report = run_eval(Path(runs["fim"].out_dir), target=target, prompts=4, new_tokens=8)
    assert report["left_to_right"]["prompts"] == 4 and report["infilling"]["prompts"] > 0
    assert report["infilling"]["draft_prompt"] == "infilling" and report["acceptance"] == report["left_to_right"]["acceptance"]
    assert run_eval(Path(runs["ltr"].out_dir), target=target, prompts=2, new_tokens=8)["infilling"]["draft_prompt"] == "left to right"
