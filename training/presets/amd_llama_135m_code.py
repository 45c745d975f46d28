"""AMD-Llama-135m-code: the pretrained model fine-tuned on the Python part of StarCoder's data.

About 20B tokens; learning rate 3e-4 cosine to 3e-5 after 2000 warm-up steps; global batch 320
sequences of 2048 (655,360 tokens); otherwise as the pretraining.
"""

from dataclasses import replace

from ..config import TrainConfig
from .amd_llama_135m import config as pretraining


def config() -> TrainConfig:
    return replace(
        pretraining(),
        init_from="amd/AMD-Llama-135m",
        data=("data/starcoder-python",),
        out_dir="runs/amd-llama-135m-code",
        global_batch_tokens=320 * 2048,
        micro_batch=16,
        max_tokens=20_000_000_000,
        lr=3e-4, min_lr=3e-5, warmup_steps=2000,
    )
