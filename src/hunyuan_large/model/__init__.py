"""The Hunyuan-Large model (SPEC §2)."""

from .transformer import HunyuanForCausalLM, HunyuanModel, ModelOutput

__all__ = ["HunyuanForCausalLM", "HunyuanModel", "ModelOutput"]
