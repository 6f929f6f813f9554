"""python -m robustcompress (also what torchrun launches)."""
from robustcompress.cli import entry

entry()
