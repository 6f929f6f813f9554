"""Applications built on robustcompress: the Gradio demo (``robustcompress.apps.demo``, needs gradio) and its logic
without a UI (``robustcompress.apps.handler``: load a bundle, turn a picture into a model input, attack, compare).
``robustcompress demo`` (or ``python apps/demo.py``) serves it; ``python -m robustcompress.apps.latency`` measures an
exported model's latency with the PyTorch eager row the torch-free runtime cannot measure."""
