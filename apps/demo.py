"""Entry script for the Gradio demo: ``python apps/demo.py [BUNDLE] [--port 7860]`` is ``robustcompress demo ...``.

The demo's logic lives in the package: :mod:`robustcompress.apps.handler` (no UI) and :mod:`robustcompress.apps.demo`.
"""
import sys

from robustcompress.cli import main

if __name__ == "__main__":
    sys.exit(main(["demo", *sys.argv[1:]]))
