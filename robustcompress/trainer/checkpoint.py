"""Training checkpoints: written atomically and read back with weights_only=True (the helpers live in robustcompress.io)."""
from robustcompress.io import atomic_save, atomic_write, load_checkpoint, save_safetensors

__all__ = ["atomic_save", "atomic_write", "load_checkpoint", "save_safetensors"]
