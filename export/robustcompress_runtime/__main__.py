"""`python -m robustcompress_runtime model.onnx image.png` is `python -m robustcompress_runtime.runtime ...`."""
import sys

from robustcompress_runtime.runtime import main

sys.exit(main())
