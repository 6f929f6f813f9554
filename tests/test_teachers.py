"""Teacher making for AKD: early-stopped snapshots and weak adversarial fine-tuning, as SDK functions."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

from robustcompress import teachers as teachers_module
from robustcompress.data import DataBundle
from robustcompress.methods import create_method
from robustcompress.data import split_validation
from robustcompress.models import build_model, resolve_model
from robustcompress.teachers import train_teacher, weak_adversarial_finetune
from robustcompress.trainer import TrainConfig, train
from robustcompress.verify import evaluate

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def tiny(digits16):
    x, y = digits16.train.tensors
    xt, yt = digits16.test.tensors
    return DataBundle("digits-tiny", TensorDataset(x[:128], y[:128]), TensorDataset(xt[:64], yt[:64]), 10, 16,
                      flip=False, crop_padding=2)


def _same_weights(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_select_by_epoch_keeps_that_epoch_of_the_full_schedule(tiny):
    kwargs = dict(epochs=3, lr=0.05, batch_size=64, use_cache=False, progress=False)
    early = train_teacher("lcnet_050", tiny, select=1, **kwargs)
    assert early.teacher_info["epoch"] == 1 and early.teacher_info["select"] == 1
    # The reference: epoch 1 of the same 3-epoch schedule, snapshotted by hand.
    torch.manual_seed(0)  # train_teacher seeds the initial weights with its seed (0)
    reference = build_model("lcnet_050", 10, 16)
    config = TrainConfig(epochs=3, lr=0.05, batch_size=64, eps=0.0, steps=0, crop_padding=2, flip=False, progress=False)
    snapshot = {}

    def keep_first(epoch, record):
        if epoch == 0:
            snapshot.update({k: v.clone() for k, v in reference.state_dict().items()})

    train(reference, [], create_method("standard"), tiny.train, 10, config, CPU, on_epoch_end=keep_first)
    assert all(torch.equal(v, snapshot[k]) for k, v in early.state_dict().items())
    last = train_teacher("lcnet_050", tiny, select="last", **kwargs)
    assert _same_weights(last, reference) and not _same_weights(last, early)


def test_best_robust_keeps_the_epoch_with_the_best_validation_pgd_accuracy(tiny):
    model = train_teacher("lcnet_050", tiny, epochs=3, lr=0.1, batch_size=32, select="best_robust",
                          val_fraction=0.25, val_eps=2 / 255, use_cache=False, progress=False)
    info = model.teacher_info
    curve = [c["val_robust_acc"] for c in info["validation_curve"]]
    assert len(curve) == 3 and info["val_images"] == 32
    assert info["epoch"] == 1 + curve.index(max(curve)) and info["val_robust_acc"] == max(curve)
    # its cost: every epoch and every validation (each curve point timed), which survives a resume
    assert info["train_seconds"] >= sum(c["seconds"] for c in info["validation_curve"]) > 0
    # The returned weights really are that snapshot: re-measuring on the same held-out images agrees.
    _, val = split_validation(tiny.train, 0.25, seed=0)
    again = evaluate(model, val, attacks=("pgd10",), eps=2 / 255, device=CPU, seed=0)
    assert again.robust_acc["pgd10"] == pytest.approx(info["val_robust_acc"])


def test_validation_split_is_seeded_and_disjoint(tiny):
    train_a, val_a = split_validation(tiny.train, 0.25, seed=0)
    train_b, val_b = split_validation(tiny.train, 0.25, seed=0)
    assert torch.equal(val_a.tensors[0], val_b.tensors[0])
    assert len(train_a) + len(val_a) == len(tiny.train) and len(val_a) == 32
    seen = {tuple(img.flatten()[:40].tolist()) for img in train_a.tensors[0]}
    assert not any(tuple(img.flatten()[:40].tolist()) in seen for img in val_a.tensors[0])


@pytest.fixture(scope="module")
def accurate_standard(digits16):
    """A small plain CNN, standard-trained to ~85% on digits in about 2 CPU seconds (tiny timm models need longer)."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )
    model = resolve_model(net, num_classes=10, input_size=16)
    config = TrainConfig(epochs=3, batch_size=64, lr=0.1, crop_padding=2, flip=False, progress=False)
    train(model, [], create_method("standard"), digits16.train, 10, config, CPU)
    return model.eval()


def test_weak_adversarial_finetune_makes_a_more_robust_copy_and_caches_it(accurate_standard, digits16, monkeypatch):
    xt, yt = digits16.test.tensors
    before = {k: v.clone() for k, v in accurate_standard.state_dict().items()}
    weak_eps = 4 / 255  # half the budget the robustness is then measured at
    robust = weak_adversarial_finetune(accurate_standard, digits16, weak_eps, steps=2, epochs=3, lr=0.05,
                                       progress=False)
    assert all(torch.equal(v, accurate_standard.state_dict()[k]) for k, v in before.items())  # input untouched
    info = robust.teacher_info
    assert info["method"] == "pgd-at" and info["eps"] == weak_eps and info["steps"] == 2 and info["epoch"] == 3
    assert info["step_size"] == pytest.approx(2.5 * weak_eps / 2)
    test = (xt[:180], yt[:180])
    start = evaluate(accurate_standard, test, attacks=("pgd10",), eps=8 / 255, device=CPU)
    tuned = evaluate(robust, test, attacks=("pgd10",), eps=8 / 255, device=CPU)
    assert tuned.robust_acc["pgd10"] > start.robust_acc["pgd10"] + 0.1  # measured: about 0.26 -> 0.55
    assert tuned.clean_acc > 0.7

    def no_training(*args, **kwargs):
        raise AssertionError("the second call should come from the cache")

    monkeypatch.setattr(teachers_module, "fit_and_select", no_training)
    cached = weak_adversarial_finetune(accurate_standard, digits16, weak_eps, steps=2, epochs=3, lr=0.05,
                                       progress=False)
    assert _same_weights(cached, robust) and cached.teacher_info["eps"] == weak_eps


@pytest.mark.parametrize("select, message", [("bogus", "unknown"), (0, "not an epoch"), (5, "not an epoch"),
                                             (True, "must be")])
def test_bad_select_is_explained(tiny, select, message):
    with pytest.raises(ValueError, match=message):
        train_teacher("lcnet_050", tiny, epochs=3, select=select, use_cache=False, progress=False)


def test_bad_weak_training_settings_are_explained(accurate_standard, tiny):
    with pytest.raises(ValueError, match="eps"):
        weak_adversarial_finetune(accurate_standard, tiny, eps=0.0)
    with pytest.raises(ValueError, match="steps"):
        weak_adversarial_finetune(accurate_standard, tiny, eps=2 / 255, steps=0)
