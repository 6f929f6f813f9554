import pytest
import torch
from torch.utils.data import TensorDataset

from robustcompress.methods import Method, create_method
from robustcompress.models import build_model
from robustcompress.trainer import TrainConfig, load_checkpoint, train

CPU = torch.device("cpu")
CONFIG = dict(epochs=2, batch_size=64, lr=0.05, eps=8 / 255, step_size=2 / 255, steps=2, progress=False)


def _subset(digits16, n=128):
    x, y = digits16.train.tensors
    return TensorDataset(x[:n], y[:n])


class Interrupt(Exception):
    pass


def _stop_after(stop_epoch):
    def callback(epoch, record):
        if epoch == stop_epoch:
            raise Interrupt

    return callback


def test_resume_continues_from_the_saved_epoch_with_identical_results(digits16, tmp_path):
    data = _subset(digits16)
    torch.manual_seed(0)
    straight = build_model("lcnet_050", 10, 16)
    train(straight, [], create_method("pgd-at"), data, 10, TrainConfig(**CONFIG), CPU, tmp_path / "a")

    torch.manual_seed(0)
    first = build_model("lcnet_050", 10, 16)
    with pytest.raises(Interrupt):
        train(first, [], create_method("pgd-at"), data, 10, TrainConfig(**CONFIG), CPU, tmp_path / "b",
              on_epoch_end=_stop_after(0))
    assert load_checkpoint(tmp_path / "b" / "last.pt")["epoch"] == 0

    resumed = build_model("lcnet_050", 10, 16)  # other weights: everything must come from the checkpoint
    seen = []
    history = train(resumed, [], create_method("pgd-at"), data, 10, TrainConfig(**CONFIG), CPU, tmp_path / "b",
                    resume=True, on_epoch_end=lambda e, r: seen.append(e))
    assert seen == [1]  # epoch 0 was not trained again
    assert [h["epoch"] for h in history] == [0, 1]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5), name


class NaNAfterFirstEpoch(Method):
    needs_teacher = False
    name = "nan-test"

    def perturb(self, ctx):
        return ctx.x

    def loss(self, ctx, x_adv):
        logits = ctx.student(x_adv)
        loss = torch.nn.functional.cross_entropy(logits, ctx.y)
        return (loss * float("nan") if ctx.epoch >= 1 else loss), logits


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(digits16, tmp_path):
    model = build_model("lcnet_050", 10, 16)
    with pytest.raises(FloatingPointError, match="epoch 2.*checkpoint after epoch 1 is kept.*Lower lr"):
        train(model, [], NaNAfterFirstEpoch(), _subset(digits16), 10, TrainConfig(**CONFIG), CPU, tmp_path)
    state = load_checkpoint(tmp_path / "last.pt")
    assert state["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in state["student"].values() if v.is_floating_point())


def test_training_reduces_the_loss(digits16):
    torch.manual_seed(0)
    model = build_model("test_resnet", 10, 16)
    config = TrainConfig(**{**CONFIG, "epochs": 3, "steps": 0, "eps": 0.0})
    history = train(model, [], create_method("standard"), _subset(digits16, 256), 10, config, CPU)
    assert history[-1]["loss"] < history[0]["loss"]


def test_distillation_method_without_teacher_is_explained(digits16):
    with pytest.raises(ValueError, match="pass teachers"):
        train(build_model("lcnet_050", 10, 16), [], create_method("rslad"), _subset(digits16), 10,
              TrainConfig(**CONFIG), CPU)


def test_a_write_that_fails_for_want_of_space_names_the_file_and_the_cause(tmp_path):
    """A real failing write (a file size limit, as a full disk fails a write) during a checkpoint is an OSError
    naming the checkpoint, not the temporary file, with the system's reason; the CLI prints it as one line with a
    fix, and no temporary file is left behind."""
    import subprocess
    import sys

    target = tmp_path / "checkpoints" / "last.pt"
    code = ("import resource, signal, sys, torch\n"
            "from robustcompress.cli import describe_error\n"
            "from robustcompress.io import atomic_save\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))\n"
            "try:\n"
            "    atomic_save({'student': torch.zeros(100_000)}, sys.argv[1])\n"
            "except OSError as exc:\n"
            "    print(exc.filename, exc.strerror, sep='|')\n"
            "    print(describe_error(exc))\n")
    done = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    where, line = done.stdout.strip().splitlines()
    assert where == f"{target}|File too large"
    assert line.startswith(f"File too large ({target}); ") and "ulimit -f" in line
    assert sorted(p.name for p in target.parent.iterdir()) == []


def test_a_full_disk_names_the_file_being_written(tmp_path):
    import errno

    from robustcompress.cli import describe_error
    from robustcompress.io import atomic_write

    def full(tmp):
        with open(tmp, "wb") as f:
            f.write(b"x")
        raise OSError(errno.ENOSPC, "No space left on device", tmp)

    with pytest.raises(OSError) as info:
        atomic_write(tmp_path / "config.json", full)
    assert info.value.filename == str(tmp_path / "config.json") and list(tmp_path.iterdir()) == []
    assert describe_error(info.value) == (f"No space left on device ({tmp_path / 'config.json'}); free some disk space "
                                          "or pass --out on another disk, then rerun")


@pytest.mark.parametrize("n", [65, 33])
def test_a_last_batch_of_one_is_merged_into_the_one_before_not_a_batchnorm_crash(digits16, n):
    """N = 1 (mod batch size): BatchNorm cannot normalise a batch of one image in training mode."""
    student = build_model("test_efficientnet", 10, 16)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in student.modules())
    config = TrainConfig(**{**CONFIG, "epochs": 1, "batch_size": 32})
    history = train(student, [], create_method("pgd-at"), _subset(digits16, n), 10, config, CPU)
    assert len(history) == 1 and history[0]["loss"] == history[0]["loss"]  # finite, every image seen once


@pytest.mark.parametrize("world, n, batch_size", [(1, 65, 32), (1, 33, 32), (2, 67, 32), (2, 35, 32), (2, 64, 32),
                                                  (3, 70, 32), (1, 64, 32)])
def test_every_sample_is_in_one_batch_and_no_process_gets_a_batch_of_one(monkeypatch, world, n, batch_size):
    from robustcompress.trainer import distributed

    monkeypatch.setattr(distributed, "world_size", lambda: world)
    seen: list[int] = []
    steps = set()
    for rank in range(world):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        batches = list(distributed.local_batches(n, batch_size, True, seed=3))
        steps.add(len(batches))
        for local, total in batches:
            assert len(local) >= 2 and total >= 2 * world
            seen += local.tolist()
    assert sorted(seen) == list(range(n))  # none dropped, none twice
    assert steps == {distributed.global_batches_per_epoch(n, batch_size)}  # every rank takes the same steps


def test_a_training_set_too_small_for_batchnorm_is_refused_in_one_line(digits16):
    config = TrainConfig(**{**CONFIG, "epochs": 1})
    with pytest.raises(ValueError, match="train_data has 1 image; training needs at least 2"):
        train(build_model("test_efficientnet", 10, 16), [], create_method("pgd-at"), _subset(digits16, 1), 10, config,
              CPU)


class _FakeSummaryWriter:
    """Stands in for torch.utils.tensorboard.SummaryWriter: records every scalar."""

    scalars: list = []

    def __init__(self, log_dir):
        self.log_dir = log_dir

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def flush(self):
        pass

    def close(self):
        pass


def _train_logged(digits8, folder, epochs=2, **kw):
    train_set, _ = digits8
    model = build_model("test_resnet", 10, 8)
    config = TrainConfig(**{**CONFIG, "epochs": epochs, "eps": 0.0, "steps": 0})
    return train(model, [], create_method("standard"), train_set, 10, config, CPU, folder / "checkpoints",
                 log_dir=folder, **kw)


def test_every_epoch_is_a_line_of_metrics_jsonl_and_tensorboard_scalars(digits8, tmp_path, monkeypatch):
    """metrics.jsonl gets one JSON line per epoch (train loss, validation metrics, seconds); with tensorboard
    installed the same numbers go to TensorBoard in the run folder, the convention PyTorch users expect."""
    import json
    import sys
    import types

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = _FakeSummaryWriter
    monkeypatch.setitem(sys.modules, "tensorboard", types.ModuleType("tensorboard"))
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    monkeypatch.setattr(_FakeSummaryWriter, "scalars", [])

    def validation(epoch, record):
        record["validation"] = {"score": 0.5 + epoch, "robust_acc": 0.5 + epoch}

    history = _train_logged(digits8, tmp_path, on_epoch_end=validation)
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1, 2]
    assert [line["train_loss"] for line in lines] == [h["loss"] for h in history]
    assert lines[1]["validation"] == {"score": 1.5, "robust_acc": 1.5} and lines[0]["seconds"] > 0
    tags = {(tag, step) for tag, _, step in _FakeSummaryWriter.scalars}
    assert {("train/loss", 1), ("train/loss", 2), ("val/robust_acc", 2), ("time/epoch_seconds", 1)} <= tags


def test_without_tensorboard_only_metrics_jsonl_is_written(digits8, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tensorboard", None)  # 'import tensorboard' fails as if it were not installed
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    _train_logged(digits8, tmp_path, epochs=1)
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 1
    assert not (tmp_path / "tensorboard").exists()


def test_a_resumed_run_continues_metrics_jsonl_without_repeating_epochs(digits8, tmp_path):
    import json

    with pytest.raises(Interrupt):
        _train_logged(digits8, tmp_path, on_epoch_end=_stop_after(0))
    _train_logged(digits8, tmp_path, resume=True)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]


# -- the one best-epoch selection driver (robustcompress.trainer.select.train_and_select) ----------------------------
def _epochs_setting_weights(model, epochs):
    """A run whose epoch k leaves every weight equal to k, so a kept state names its epoch."""
    def run_epochs(on_epoch_end):
        history = []
        for epoch in range(epochs):
            with torch.no_grad():
                model.weight.fill_(epoch + 1)
            history.append({"loss": 1.0 / (epoch + 1)})
            on_epoch_end(epoch, history[-1])
        return history

    return run_epochs


def test_the_selection_driver_keeps_the_best_scored_epoch_the_earliest_of_ties():
    from robustcompress.trainer.select import train_and_select

    model = torch.nn.Linear(2, 1, bias=False)
    scores = iter([0.2, 0.5, 0.5, 0.1])
    kept = train_and_select(model, _epochs_setting_weights(model, 4), "best_robust", 4,
                            score=lambda m: {"score": next(scores)})
    assert kept.epoch == 2 and kept.best["score"] == 0.5 and [p["epoch"] for p in kept.curve] == [1, 2, 3, 4]
    assert torch.all(model.weight == 2) and torch.all(kept.last_state["weight"] == 4) and len(kept.history) == 4
    assert kept.history[1]["validation"] == {"score": 0.5}  # each epoch's record carries its validation point


def test_the_selection_driver_stops_at_a_given_epoch_keeps_the_last_or_the_start():
    from robustcompress.trainer.select import train_and_select

    model = torch.nn.Linear(2, 1, bias=False)
    kept = train_and_select(model, _epochs_setting_weights(model, 4), 2, 4)
    assert kept.epoch == 2 and len(kept.history) == 2 and torch.all(model.weight == 2) and kept.last_state is None
    kept = train_and_select(model, _epochs_setting_weights(model, 4), "last", 4)
    assert kept.epoch == 4 and torch.all(model.weight == 4) and kept.best is None
    with torch.no_grad():
        model.weight.fill_(0)
    kept = train_and_select(model, _epochs_setting_weights(model, 3), "best_clean", 3, score_start=True,
                            score=lambda m: {"score": float(m.weight[0, 0] == 0)})  # training only hurts
    assert kept.epoch == 0 and torch.all(model.weight == 0) and len(kept.curve) == 4
    with pytest.raises(ValueError, match="pass score="):
        train_and_select(model, _epochs_setting_weights(model, 1), "best_robust", 1)


def test_the_student_keeps_the_epoch_and_weights_a_hand_made_selection_keeps(digits16):
    import copy

    from robustcompress.distill import VALIDATION_SPLIT_SEED, train_student
    from robustcompress.data import split_validation
    from robustcompress.verify.evaluate import validation_score

    config = TrainConfig(**{**CONFIG, "epochs": 3})
    data = _subset(digits16, 96)
    torch.manual_seed(0)
    student = build_model("test_efficientnet", 10, 16)
    reference = copy.deepcopy(student)
    run = train_student(student, [], create_method("pgd-at"), data, 10, config, CPU, select="best_robust",
                        val_size=32)
    # The same run by hand: every epoch scored on the same held-out images, the first best one kept.
    train_part, val_part = split_validation(data, 32, VALIDATION_SPLIT_SEED)
    score, snapshots = validation_score(val_part, config.eps, CPU, config.seed), []

    def keep(epoch, record):
        snapshots.append((score(reference)["score"], {k: v.clone() for k, v in reference.state_dict().items()}))

    train(reference, [], create_method("pgd-at"), train_part, 10, config, CPU, on_epoch_end=keep)
    best = max(range(3), key=lambda i: (snapshots[i][0], -i))
    assert run.selection["best_epoch"] == best + 1 and run.selection["val_images"] == 32
    assert [p["score"] for p in run.selection["curve"]] == [s for s, _ in snapshots]
    assert all(torch.equal(v, snapshots[best][1][k]) for k, v in student.state_dict().items())
    assert all(torch.equal(v, snapshots[-1][1][k]) for k, v in run.last_state.items())


def test_a_resumed_selection_counts_the_time_of_every_epoch_and_validation(tmp_path, monkeypatch):
    # A long fine-tune cut by a session's end: its cost must add the epochs and validations of both runs.
    import itertools

    import robustcompress.trainer.select as select

    clock = itertools.count(0.0, 5.0)  # every scoring takes 5 s on this clock
    monkeypatch.setattr(select.time, "perf_counter", lambda: next(clock))
    model = torch.nn.Linear(2, 1, bias=False)

    def epochs(first: int, last: int, earlier: list) -> select.RunEpochs:
        def run(on_epoch_end):
            history = list(earlier)  # what the checkpoint gives back on a resume
            for epoch in range(first, last):
                history.append({"loss": 1.0, "seconds": 10.0})
                on_epoch_end(epoch, history[-1])
            return history
        return run

    first = select.train_and_select(model, epochs(0, 2, []), "best_robust", 4, score=lambda m: {"score": 0.1},
                                    checkpoint_dir=tmp_path)
    assert first.seconds() == 2 * 10 + 2 * 5
    resumed = select.train_and_select(model, epochs(2, 4, first.history), "best_robust", 4,
                                      score=lambda m: {"score": 0.2}, checkpoint_dir=tmp_path)
    assert [p["epoch"] for p in resumed.curve] == [1, 2, 3, 4] and resumed.seconds() == 4 * 10 + 4 * 5
