"""The model configuration: one typed record, read from a Hugging Face `config.json`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import SpectabError


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int
    """Rows of the embedding and of the output head (CodeLlama-7b: 32016, AMD-Llama-135m: 32000)."""
    hidden_size: int
    """Width of the residual stream (CodeLlama-7b: 4096, AMD-Llama-135m: 768)."""
    num_layers: int
    """Transformer blocks (CodeLlama-7b: 32, AMD-Llama-135m: 12)."""
    num_heads: int
    """Query heads per attention layer."""
    num_kv_heads: int
    """Key/value heads; fewer than `num_heads` means grouped-query attention (SmolLM2: 3 vs 9)."""
    head_dim: int
    """Width of one head; usually hidden_size // num_heads."""
    intermediate_size: int
    """Width of the SwiGLU feed-forward layer (CodeLlama-7b: 11008, AMD-Llama-135m: 2048)."""
    rms_norm_eps: float = 1e-5
    """Epsilon of every RMSNorm."""
    rope_theta: float = 10000.0
    """Base of the rotary position frequencies (CodeLlama: 1e6)."""
    rope_linear_factor: float = 1.0
    """Linear RoPE scaling: positions are divided by this (1.0 = none)."""
    max_position_embeddings: int = 2048
    """Context window the model was trained for (CodeLlama: 16384, AMD-Llama-135m: 2048)."""
    tie_word_embeddings: bool = False
    """Output head shares the embedding matrix (SmolLM2: yes, AMD-Llama and CodeLlama: no)."""

    @classmethod
    def from_hf(cls, hf: dict[str, Any], source: str = "the model") -> "ModelConfig":
        """Read a Hugging Face `config.json` dict of a Llama-architecture model."""
        model_type = hf.get("model_type", "llama")
        if model_type != "llama":
            raise SpectabError(
                f"{source} is a '{model_type}' model; spectab runs Llama-architecture models "
                "(CodeLlama, AMD-Llama, SmolLM2, TinyLlama, ...)"
            )
        if hf.get("attention_bias") or hf.get("mlp_bias"):
            raise SpectabError(f"{source} uses bias terms in attention or MLP, which spectab does not support")
        theta, factor = _rope(hf, source)
        heads = int(hf["num_attention_heads"])
        hidden = int(hf["hidden_size"])
        return cls(
            vocab_size=int(hf["vocab_size"]),
            hidden_size=hidden,
            num_layers=int(hf["num_hidden_layers"]),
            num_heads=heads,
            num_kv_heads=int(hf.get("num_key_value_heads") or heads),
            head_dim=int(hf.get("head_dim") or hidden // heads),
            intermediate_size=int(hf["intermediate_size"]),
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-5)),
            rope_theta=theta,
            rope_linear_factor=factor,
            max_position_embeddings=int(hf.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
        )

    def to_hf(self) -> dict[str, Any]:
        """The `config.json` dict transformers' LlamaForCausalLM reads back to the same model."""
        out: dict[str, Any] = {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "intermediate_size": self.intermediate_size,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
            "attention_bias": False,
            "mlp_bias": False,
        }
        if self.rope_linear_factor != 1.0:
            out["rope_scaling"] = {"rope_type": "linear", "factor": self.rope_linear_factor}
        return out


def _rope(hf: dict[str, Any], source: str) -> tuple[float, float]:
    # transformers 4 writes rope_theta + rope_scaling; transformers 5 writes rope_parameters.
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    theta = float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))
    kind = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    factor = float((params if params.get("rope_type") == "linear" else scaling).get("factor", 1.0))
    if kind == "default":
        return theta, 1.0
    if kind == "linear":
        return theta, factor
    raise SpectabError(f"{source} uses '{kind}' RoPE scaling; spectab supports the default and linear kinds")
