"""hunyuan-large: the Hunyuan-Large MoE system in PyTorch."""

from .config import ModelConfig
from .model import HunyuanForCausalLM, HunyuanModel

__version__ = "0.1.0"
__all__ = ["ModelConfig", "HunyuanForCausalLM", "HunyuanModel", "__version__"]
