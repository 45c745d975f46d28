"""AMD-Llama-135m-code taught to infill: a draft that reads CodeLlama's own infilling prompt.

From the released code model, its vocabulary grown to CodeLlama's 32016 tokens (the 16 new rows
start as the mean of the others), on the code fine-tune's data (StarCoder's Python) tokenized with
CodeLlama's tokenizer, 90 % of documents in fill-in-the-middle order, half of them SPM, as
CodeLlama was trained. 10B tokens (half the code fine-tune's) at its peak learning rate, 3e-4, with
a shorter warm-up; the README says why.
"""

from dataclasses import replace

from ..config import TrainConfig
from .amd_llama_135m_code import config as code_fine_tune

CODELLAMA = "codellama/CodeLlama-7b-hf"


def config() -> TrainConfig:
    base = code_fine_tune()
    return replace(
        base,
        model=replace(base.model, vocab_size=32016),
        tokenizer=CODELLAMA,
        init_from="amd/AMD-Llama-135m-code",
        vocab_from=CODELLAMA,
        data=("data/starcoder-python-codellama",),
        out_dir="runs/amd-llama-135m-code-fim",
        fim_rate=0.9, fim_spm_rate=0.5,
        max_tokens=10_000_000_000,
        lr=3e-4, min_lr=3e-5, warmup_steps=1000,
    )
