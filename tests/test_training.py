"""The training package on the CPU: a tiny Llama on this repository's own sources."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.errors import SpectabError
from engine.loading import load_model
from training.config import TrainConfig
from training.data import Dataset
from training.export import export, load_trained
from training.presets import preset
from training.prepare import prepare
from training.shards import read_shard
from training.trainer import run

from .conftest import hf_llama, save_hf

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, llama_tokenizer_dir):
    """This repository's engine sources, tokenized with the Llama-2 tokenizer."""
    out = tmp_path_factory.mktemp("corpus")
    prepare([str(ROOT / "engine")], out, str(llama_tokenizer_dir), workers=2, shard_tokens=15_000, val_every=6)
    return out


def tiny(tmp_path: Path, tokenizer: Path, corpus: Path, **changes) -> TrainConfig:
    cfg = replace(preset("tiny"), tokenizer=str(tokenizer), data=(str(corpus),), out_dir=str(tmp_path / "run"),
                  seq_len=32, global_batch_tokens=8 * 32, micro_batch=2, max_tokens=24 * 8 * 32, warmup_steps=4,
                  lr=5e-3, min_lr=5e-4, eval_every=0, eval_batches=2, ckpt_every=0, log_every=100)
    return replace(cfg, **changes)


def test_prepare_round_trip_and_resume(tmp_path, llama_tokenizer_dir, corpus):
    manifest = json.loads((corpus / "manifest.json").read_text())
    assert manifest["done"] and len(manifest["shards"]["train"]) > 1 and manifest["tokens"]["val"] > 0
    # the first document (index 0, validation) decodes back to its file, EOS after it and no BOS
    from engine.tokens import Tokenizer

    tok = Tokenizer.load(llama_tokenizer_dir)
    val = np.asarray(read_shard(corpus / "val-00000.bin"))
    first_eos = int(np.flatnonzero(val == tok.eos_id)[0])
    files = sorted(p for p in (ROOT / "engine").rglob("*") if p.is_file() and p.suffix == ".py")
    assert tok.decode([int(t) for t in val[:first_eos]]) == files[0].read_text()
    assert tok.bos_id not in val[:first_eos]
    # an interrupted preparation, resumed, writes the same tokens as one that ran through
    parts = tmp_path / "parts"
    m = prepare([str(ROOT / "engine")], parts, str(llama_tokenizer_dir), workers=1, shard_tokens=15_000, val_every=6, limit_docs=7)
    assert not m["done"]
    m = prepare([str(ROOT / "engine")], parts, str(llama_tokenizer_dir), workers=2, shard_tokens=15_000, val_every=6)
    assert m["done"]
    for split in ("train", "val"):
        assert Dataset(parts, split, 32).tokens == Dataset(corpus, split, 32).tokens
        whole = np.concatenate([read_shard(parts / s["file"]) for s in m["shards"][split]])
        again = np.concatenate([read_shard(corpus / s["file"]) for s in manifest["shards"][split]])
        assert np.array_equal(whole, again)


def test_loss_falls(tmp_path, llama_tokenizer_dir, corpus):
    logs = run(tiny(tmp_path, llama_tokenizer_dir, corpus))
    assert len(logs) == 24
    assert sum(l.loss for l in logs[-4:]) / 4 < logs[0].loss - 2.0
    assert logs[-1].val_loss is not None and logs[-1].val_loss < logs[0].loss


def test_resume_continues_exactly(tmp_path, llama_tokenizer_dir, corpus):
    whole = run(tiny(tmp_path / "a", llama_tokenizer_dir, corpus))
    cfg = tiny(tmp_path / "b", llama_tokenizer_dir, corpus, ckpt_every=5)
    first = run(cfg, stop_after=10)
    assert len(first) == 10 and (Path(cfg.out_dir) / "ckpt-00000009.pt").is_file()
    rest = run(cfg, resume=True)
    assert [l.step for l in rest] == list(range(10, 24))
    assert [l.loss for l in first + rest] == [l.loss for l in whole]
    assert len(list(Path(cfg.out_dir).glob("ckpt-*.pt"))) == cfg.keep_last


def torchrun(tmp: Path, tokenizer: Path, corpus: Path, *extra: str) -> list[dict]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "training", "run",
           "--preset", "tiny", "--tokenizer", str(tokenizer), "--data", str(corpus), "--out_dir", str(tmp),
           "--seq_len", "32", "--global_batch_tokens", str(8 * 32), "--micro_batch", "2", "--max_tokens", str(6 * 8 * 32),
           "--warmup_steps", "4", "--lr", "5e-3", "--min_lr", "5e-4", "--eval_every", "0", "--eval_batches", "2",
           "--ckpt_every", "0", "--log_every", "100", *extra]
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in (tmp / "log.jsonl").read_text().splitlines()]


def test_two_processes_under_torchrun_match_one(tmp_path, llama_tokenizer_dir, corpus):
    one = run(tiny(tmp_path / "one", llama_tokenizer_dir, corpus, max_tokens=6 * 8 * 32))
    ddp = torchrun(tmp_path / "ddp", llama_tokenizer_dir, corpus)
    # FSDP2, interrupted after 3 steps and resumed from its (gathered) checkpoint
    torchrun(tmp_path / "fsdp", llama_tokenizer_dir, corpus, "--parallel", "fsdp", "--stop-after", "3")
    fsdp = torchrun(tmp_path / "fsdp", llama_tokenizer_dir, corpus, "--parallel", "fsdp", "--resume")
    assert len(one) == len(ddp) == len(fsdp) == 6
    for a, b, c in zip(one, ddp, fsdp):
        assert abs(a.loss - b["loss"]) < 1e-4 and abs(a.loss - c["loss"]) < 1e-4, (a.loss, b["loss"], c["loss"])


def test_export_loads_in_the_engine_with_the_same_logits(tmp_path, llama_tokenizer_dir, corpus):
    cfg = tiny(tmp_path, llama_tokenizer_dir, corpus, max_tokens=3 * 8 * 32)
    run(cfg)
    trained, _ = load_trained(Path(cfg.out_dir))
    folder = export(Path(cfg.out_dir), tmp_path / "exported")
    loaded = load_model(str(folder), device="cpu")
    ids = torch.randint(0, 32000, (1, 20))
    loaded.model.setup_cache(32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids, 0), trained.train_logits(ids)[0], rtol=1e-5, atol=1e-5)
    # and transformers reads the same folder
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits[0], trained.train_logits(ids)[0], rtol=1e-4, atol=1e-4)


def test_bad_inputs_say_what_to_fix(tmp_path, llama_tokenizer_dir, codellama_tokenizer_dir, corpus):
    with pytest.raises(SpectabError, match="do not divide into micro-batches of 3; choose micro_batch among 1, 2, 4, 8"):
        tiny(tmp_path, llama_tokenizer_dir, corpus, micro_batch=3).accumulation(1)
    with pytest.raises(SpectabError, match="do not divide over 3 ranks"):
        tiny(tmp_path, llama_tokenizer_dir, corpus).accumulation(3)
    # a corrupt shard
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in corpus.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    shard = broken / "train-00000.bin"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(SpectabError, match="truncated or corrupt.*re-run `spectab train prepare`"):
        Dataset(broken, "train", 32)
    shard.unlink()
    with pytest.raises(SpectabError, match="is missing"):
        Dataset(broken, "train", 32)
    (broken / "train-00000.bin").write_bytes(b"not a shard at all" * 10)
    with pytest.raises(SpectabError, match="not a spectab token shard"):
        Dataset(broken, "train", 32)
    # shards from another tokenizer
    with pytest.raises(SpectabError, match="prepared with tokenizer .* not the configured one"):
        run(tiny(tmp_path, codellama_tokenizer_dir, corpus, model=replace(preset("tiny").model, vocab_size=32016)))
    # resuming with another model
    cfg = tiny(tmp_path, llama_tokenizer_dir, corpus, max_tokens=2 * 8 * 32)
    run(cfg)
    other = replace(cfg, model=replace(cfg.model, hidden_size=96))
    with pytest.raises(SpectabError, match=r"is from another model \(hidden_size 64 -> 96\)"):
        run(other, resume=True)


def repeating_teacher(tokens: np.ndarray, tokenizer_dir: Path, out: Path) -> Path:
    """A real Llama folder whose next token is always the current one (for every token of the
    corpus): attention and MLP write nothing, and the output head row of each token is that
    token's embedding direction. Its greedy continuation of corpus text stays on corpus tokens,
    which a distilled draft has seen; plain training on the corpus never learns to repeat."""
    hf = hf_llama(32000, 64, 2, 2, 2, 172, 1e4, 256, False, seed=21)
    g = torch.Generator().manual_seed(5)
    seen = torch.from_numpy(np.unique(tokens).astype(np.int64))
    with torch.no_grad():
        for layer in hf.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed = torch.randn(32000, 64, generator=g)
        hf.model.embed_tokens.weight.copy_(embed)
        head = torch.randn(32000, 64, generator=g) * 0.01
        head[seen] = embed[seen] / embed[seen].norm(dim=1, keepdim=True) * 10 / 8  # logit 10 on itself
        hf.lm_head.weight.copy_(head)
    return save_hf(hf, tokenizer_dir, out)


def test_distillation_beats_plain_training_at_drafting(tmp_path, llama_tokenizer_dir, corpus):
    from training.evaluate import acceptance, held_out_texts
    from training.shards import tokenizer_fingerprint
    from training.tokenizer import load_tokenizer

    tok = load_tokenizer(str(llama_tokenizer_dir))
    fingerprint = tokenizer_fingerprint(tok.pieces())
    train = Dataset(corpus, "train", 32, fingerprint)
    teacher = repeating_teacher(np.concatenate([np.asarray(s) for s in train.shards]), llama_tokenizer_dir, tmp_path / "teacher")
    common = dict(max_tokens=150 * 8 * 32, lr=2e-2, min_lr=2e-3)
    plain = tiny(tmp_path / "plain", llama_tokenizer_dir, corpus, **common)
    distilled = tiny(tmp_path / "distilled", llama_tokenizer_dir, corpus, teacher=str(teacher), **common)
    run(plain)
    run(distilled)
    texts = held_out_texts([Dataset(corpus, "val", 32, fingerprint)], tok, 8, 32)
    scores = {}
    for name, cfg in (("plain", plain), ("distilled", distilled)):
        folder = export(Path(cfg.out_dir), tmp_path / f"{name}-export")
        scores[name] = acceptance(folder, str(teacher), texts, new_tokens=12, k=4)["acceptance"]
    assert scores["distilled"] > scores["plain"] + 0.15, scores


def test_mixture_follows_weights_and_is_the_same_for_any_split(tmp_path, llama_tokenizer_dir, corpus):
    from training.data import Mixture

    a, b = Dataset(corpus, "train", 32), Dataset(corpus, "val", 32)
    mix = Mixture([a, b], [3.0, 1.0], seed=1)
    assert [mix.pattern[:1000].count(d) for d in (0, 1)] == [750, 250]
    whole = mix.batch(0, 16)
    assert torch.equal(torch.cat([mix.batch(0, 8), mix.batch(8, 8)]), whole)  # two ranks' halves = one rank
    assert torch.equal(Mixture([a, b], [3.0, 1.0], seed=1).batch(0, 16), whole)  # deterministic
    assert not torch.equal(Mixture([a, b], [3.0, 1.0], seed=2).batch(0, 16), whole)  # the seed matters


def test_fine_tune_starts_from_exported_weights(tmp_path, llama_tokenizer_dir, corpus):
    base = tiny(tmp_path / "base", llama_tokenizer_dir, corpus, max_tokens=12 * 8 * 32)
    trained = run(base)
    folder = export(Path(base.out_dir), tmp_path / "base-export")
    tuned = run(tiny(tmp_path / "tuned", llama_tokenizer_dir, corpus, init_from=str(folder), max_tokens=2 * 8 * 32, seed=99))
    fresh = run(tiny(tmp_path / "fresh", llama_tokenizer_dir, corpus, max_tokens=2 * 8 * 32, seed=99))
    # the fine-tune's first loss is the trained model's level, far below a random start
    assert abs(tuned[0].loss - trained[-1].loss) < 0.5 and tuned[0].loss < fresh[0].loss - 1
    with pytest.raises(SpectabError, match="another shape"):
        run(tiny(tmp_path / "bad", llama_tokenizer_dir, corpus, init_from=str(folder),
                 model=replace(preset("tiny").model, hidden_size=96)))
