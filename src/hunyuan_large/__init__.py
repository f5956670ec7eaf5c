"""hunyuan-large: the Hunyuan-Large MoE system in PyTorch."""

from .config import ModelConfig
from .model import HunyuanForCausalLM, HunyuanModel
from .pretrained import load_pretrained, save_pretrained

__version__ = "0.1.0"
__all__ = ["ModelConfig", "HunyuanForCausalLM", "HunyuanModel", "load_pretrained", "save_pretrained", "__version__"]
