"""A tiny Llama for tests and CPU demonstrations: the Llama-2 vocabulary, two small layers."""

from engine.config import ModelConfig

from ..config import TrainConfig


def config() -> TrainConfig:
    return TrainConfig(
        model=ModelConfig(vocab_size=32000, hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=2, head_dim=32,
                          intermediate_size=172, max_position_embeddings=256),
        out_dir="runs/tiny",
        seq_len=64,
        global_batch_tokens=8 * 64,
        micro_batch=4,
        max_tokens=200 * 8 * 64,
        lr=3e-3, min_lr=3e-4, warmup_steps=10,
        log_every=10, eval_every=50, eval_batches=4, ckpt_every=50, keep_last=2,
    )
