"""Torch-free pieces of robustcompress for deployment: numpy, Pillow and onnxruntime only.

``robustcompress_runtime.images`` holds the one picture -> model-input conversion that training data, the deploy
runtime and the demo share.
"""
