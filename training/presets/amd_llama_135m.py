"""AMD-Llama-135m pretraining, as AMD released it.

SlimPajama-627B without its RedPajama-Book subset, plus Project Gutenberg: about 670B tokens, one
epoch, sequences of 2048, documents ending with EOS and no BOS, packed. AdamW (0.9, 0.95), eps 1e-8,
weight decay 0.1, learning rate 6e-4 cosine to 6e-5 after 2000 warm-up steps, gradient clip 1.0, bf16,
global batch 1024 sequences (2,097,152 tokens).
"""

from engine.config import ModelConfig

from ..config import TrainConfig

MODEL = ModelConfig(
    vocab_size=32000, hidden_size=768, num_layers=12, num_heads=12, num_kv_heads=12, head_dim=64,
    intermediate_size=2048, rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=2048,
    tie_word_embeddings=False,
)


def config() -> TrainConfig:
    return TrainConfig(
        model=MODEL,
        tokenizer="amd/AMD-Llama-135m",
        data=("data/slimpajama-no-book", "data/gutenberg"),
        out_dir="runs/amd-llama-135m",
        seq_len=2048,
        global_batch_tokens=1024 * 2048,
        micro_batch=16,
        max_tokens=670_000_000_000,
        lr=6e-4, min_lr=6e-5, warmup_steps=2000,
        beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, grad_clip=1.0,
        precision="auto",
    )
