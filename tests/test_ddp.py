"""Two processes with gloo on CPU train and evaluate exactly like one process on the same data."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

from robustcompress.attacks import kl_div, pgd
from robustcompress.methods import Method, create_method
from robustcompress.methods.common import teacher_probs
from robustcompress.models import create_model
from robustcompress.trainer import TrainConfig, load_checkpoint, train
from robustcompress.verify import evaluate

# eps=0 and no augmentation: nothing random happens per sample, so sharding must not change the result.
# fp32: the ranks must reproduce one process's weights to float rounding, and bf16 rounds each shard's sums apart.
CONFIG = dict(epochs=2, batch_size=24, lr=0.1, eps=0.0, step_size=2 / 255, steps=2, augment=False, progress=False,
              precision="fp32")
N_TRAIN, N_EVAL = 61, 50  # 61 = 2 full batches + 13: the last global batch is uneven across ranks on purpose


def _student(seed=0):
    """No BatchNorm in training mode: its batch statistics are per process under DDP, as in any DDP setup."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    return create_model(net, 10, 8)


def _teacher():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 10))
    return create_model(net, 10, 8).eval()


def _data():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(N_TRAIN, 3, 8, 8, generator=generator)
    return TensorDataset(x, torch.randint(0, 10, (N_TRAIN,), generator=generator))


class AdapterKD(Method):
    """A distillation method with a trainable adapter used outside the student's forward (like feature methods).

    With ``bypass=True`` the loss reaches the student through its submodule ``net`` instead of calling it, so no
    forward goes through DDP and the trainer must average the gradients itself.
    """

    name = "adapter-kd-test"

    def __init__(self, bypass=False):
        super().__init__()
        self.bypass = bypass

    def setup(self, student, teachers, num_classes, input_size):
        torch.manual_seed(2)
        self.adapter = nn.Linear(num_classes, num_classes)

    def perturb(self, ctx):
        ctx.cache["soft"] = teacher_probs(ctx.teachers, ctx.x)
        return pgd(ctx.student, ctx.x, ctx.y, ctx.eps, ctx.step_size, ctx.steps)

    def loss(self, ctx, x_adv):
        logits = ctx.student.net(x_adv) if self.bypass else ctx.student(x_adv)  # normalisation is identity here
        return kl_div(self.adapter(logits), ctx.cache["soft"]).mean() + 0.5 * nn.functional.cross_entropy(
            ctx.student(ctx.x) if not self.bypass else ctx.student.net(ctx.x), ctx.y), logits


def run_all(out_dir, rank_suffix=""):
    """What each process (and the single-process baseline) computes."""
    results = {}
    for variant in ("ddp", "bypass", "ard"):
        student = _student()
        method = create_method("ard", alpha=0.7) if variant == "ard" else AdapterKD(bypass=variant == "bypass")
        ckpt = os.path.join(out_dir, f"ckpt-{variant}{rank_suffix}")
        history = train(student, [_teacher()], method, _data(), 10, TrainConfig(**CONFIG), torch.device("cpu"),
                        checkpoint_dir=ckpt)
        results[variant] = {"history": history, "student": student.state_dict(), "method": method.state_dict()}
    test = _data()
    report = evaluate(_teacher(), TensorDataset(*[t[:N_EVAL] for t in test.tensors]), ("fgsm",), eps=8 / 255,
                      n_examples=None, batch_size=16, shard=True)
    results["eval"] = report.to_dict(per_sample=True)
    return results


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _close(a, b, atol=2e-5):
    return all(torch.allclose(a[k].float(), b[k].float(), atol=atol) for k in a)


@pytest.fixture(scope="module")
def torchrun(tmp_path_factory):
    """One torchrun launch of two CPU processes (gloo): ddp_ranks.py trains and evaluates as run_all, then runs
    `robustcompress fit` on a tiny .npz; returns the finished process and the folders."""
    tmp_path = tmp_path_factory.mktemp("ddp")
    rng = np.random.default_rng(0)
    npz = tmp_path / "tiny.npz"
    np.savez(npz, x_train=rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8), y_train=rng.integers(0, 3, 64),
             x_test=rng.integers(0, 256, (20, 8, 8, 3), dtype=np.uint8), y_test=rng.integers(0, 3, 20))
    config = tmp_path / "fit.json"
    config.write_text(json.dumps({"verify_attacks": ["fgsm"], "verify_examples": 20, "progress": False,
                                  "augment": False}))
    bundle = tmp_path / "bundle"
    fit = ["fit", str(npz), "--config", str(config), "--student", "test_efficientnet", "--method", "pgd-at",
           "--epochs", "1", "--steps", "1", "--batch-size", "32", "--device", "cpu", "--out", str(bundle)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), str(Path(__file__).with_name("ddp_ranks.py")), str(tmp_path),
               "--", *fit]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    return done, tmp_path, bundle


def test_two_gloo_processes_match_one_process(torchrun):
    done, tmp_path, _ = torchrun
    assert done.returncode == 0, done.stderr[-3000:]
    single = run_all(str(tmp_path), rank_suffix="-single")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for variant in ("ddp", "bypass", "ard"):
        expected = single[variant]
        for result in (r[variant] for r in ranks):  # every rank ends with the single-process weights and adapters
            assert _close(result["student"], expected["student"]), variant
            assert _close(result["method"], expected["method"]), variant
            for got, want in zip(result["history"], expected["history"]):
                assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
                assert got["train_acc"] == pytest.approx(want["train_acc"])
        saved = load_checkpoint(tmp_path / f"ckpt-{variant}" / "last.pt")  # written by rank 0
        assert saved["epoch"] == CONFIG["epochs"] - 1 and _close(saved["student"], expected["student"])
    # Sharded evaluation gathers the same per-sample verdicts, in the same order, on every rank.
    for result in ranks:
        assert result["eval"]["n_examples"] == N_EVAL
        assert result["eval"]["per_sample"] == single["eval"]["per_sample"]
        assert result["eval"]["robust_acc"]["fgsm"] == pytest.approx(single["eval"]["robust_acc"]["fgsm"])


def test_torchrun_cli_fit_trains_on_two_processes_and_rank0_saves(torchrun):
    done, _, bundle = torchrun
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("bundle saved to") == 1  # rank 0 reports, rank 1 stays quiet
    saved = json.loads((bundle / "config.json").read_text())
    assert saved["metrics"]["n_examples"] == 20  # the sharded evaluation covered every test image
    assert saved["history"][0]["epoch"] == 0
    assert (bundle / "checkpoints" / "last.pt").is_file()


def test_rank_results_merge_in_image_order_with_stage_counts_summed():
    """Under torchrun each rank attacks every world-th image; the merged report must read as one process's:
    flags back in image order, the slowest rank's time, each warning once, AutoAttack's stage counts summed."""
    from robustcompress.trainer.distributed import merge_raw_flags

    rank0 = ({"clean": [True, True, False], "autoattack": [True, False, False]}, {"clean": 1.0, "autoattack": 5.0},
             {"autoattack": ["flag a"]}, {"autoattack": {"apgd-ce": 2, "apgd-t": 1}})
    rank1 = ({"clean": [True, False], "autoattack": [False, False]}, {"clean": 2.0, "autoattack": 4.0},
             {"autoattack": ["flag a", "flag b"]}, {"autoattack": {"apgd-ce": 1, "apgd-t": 0}})
    flags, seconds, warnings, stages = merge_raw_flags([rank0, rank1], 5)
    assert flags == {"clean": [True, True, True, False, False], "autoattack": [True, False, False, False, False]}
    assert seconds == {"clean": 2.0, "autoattack": 5.0} and warnings == {"autoattack": ["flag a", "flag b"]}
    assert stages == {"autoattack": {"apgd-ce": 3, "apgd-t": 1}}
