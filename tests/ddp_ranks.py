"""What each torchrun process of tests/test_ddp.py runs: the training and evaluation that one process must match,
then `robustcompress fit` from the CLI, in the same two processes (one launch instead of two: every start-up of
torch and timm costs seconds of the test run).

    python -m torch.distributed.run --nproc_per_node 2 tests/ddp_ranks.py OUT_DIR -- FIT_ARGS...
"""
import os
import sys

import torch

from robustcompress.cli import entry
from robustcompress.runtime_env import resolve_device
from test_ddp import run_all  # tests/ is this script's folder, so it is on sys.path

if __name__ == "__main__":
    out_dir, separator, *fit_args = sys.argv[1:]
    assert separator == "--", "usage: ddp_ranks.py OUT_DIR -- FIT_ARGS..."
    torch.set_num_threads(1)
    assert resolve_device("cpu").type == "cpu"  # joins the gloo group, as the CLI does under torchrun
    rank = int(os.environ["RANK"])
    torch.save(run_all(out_dir), os.path.join(out_dir, f"rank{rank}.pt"))
    entry(fit_args)  # `robustcompress fit`, to the end of the process
