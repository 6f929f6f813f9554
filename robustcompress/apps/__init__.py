"""Applications built on robustcompress: the Gradio demo (``robustcompress.apps.demo``, needs gradio) and its logic
without a UI (``robustcompress.apps.handler``: attack a picture, compare the models; ``apps.loading``: the bundle,
its ONNX export and gallery images; ``apps.pictures``: pictures in and out). ``robustcompress demo`` (or
``python apps/demo.py``) serves it; ``python -m robustcompress.apps.latency`` measures an exported model's latency
with the PyTorch eager row the torch-free runtime cannot measure."""
