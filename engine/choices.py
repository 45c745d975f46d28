"""Values of the engine's options that the language server checks too; importable without torch,
so the server answers `initialize` before torch is loaded."""

QUANT_MODES = ("auto", "none", "int8", "int4")
"""auto: on the CPU, a GGUF keeps its own precision where it maps onto the kernels (Q4_0/Q4_1 ->
int4, Q8_0 -> int8) and everything else becomes int8; float on GPUs. none: float weights."""
