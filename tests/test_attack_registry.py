"""One attack registry: every consumer (evaluate, the export report, the demo) gets the same images by name and seed."""
from __future__ import annotations

import pytest
import torch

from robustcompress.attacks import autoattack_flags, craft, get_attack, run_autoattack
from robustcompress.attacks.common import eval_mode

pytestmark = pytest.mark.usefixtures("one_thread")
EPS = 8 / 255


@pytest.fixture(scope="module")
def batch(digits16):
    x, y = digits16.test.tensors
    return x[:40].float() / 255 if x.dtype == torch.uint8 else x[:40], y[:40]


def _accuracy(model, x_adv, y):
    with torch.no_grad(), eval_mode(model):
        return float((model(x_adv).argmax(1) == y).float().mean())


def test_export_report_evaluate_and_demo_agree_on_robust_accuracy(standard_model, batch, tmp_path):
    from robustcompress.apps.handler import attack_images
    from robustcompress.export.onnx import save_onnx, to_onnx
    from robustcompress.export.verification import verify_onnx
    from robustcompress.verify import evaluate

    x, y = batch
    model = standard_model.cpu().eval()
    path = save_onnx(to_onnx(model, 16), tmp_path / "student.onnx")
    seed = 3
    report, x_export = verify_onnx(model, path, x, y, EPS, steps=5, seed=seed)
    evaluated = evaluate(model, (x, y), ["pgd5"], eps=EPS, seed=seed)
    x_demo = attack_images(model, x, y, "PGD", EPS, steps=5, seed=seed)
    assert torch.equal(x_demo, x_export)
    n = len(y)
    correct = evaluated.correct["pgd5"]  # evaluate's exact count; the others report fractions
    assert round(report["pytorch_robust_acc"]["pgd5"] * n) == correct
    assert round(report["robust_acc"]["pgd5"] * n) == correct  # onnxruntime on the same images
    assert round(_accuracy(model, x_demo, y) * n) == correct
    assert correct < evaluated.correct["clean"]  # the attack did something
    # The same holds batch by batch: batch b is seeded with seed + its first index, wherever it is crafted.
    small = evaluate(model, (x, y), ["pgd5"], eps=EPS, seed=seed, batch_size=16)
    assert round(_accuracy(model, craft("pgd5", model, x, y, EPS, seed, batch_size=16), y) * n) == \
        small.correct["pgd5"]


@pytest.mark.parametrize("name", ["fgsm", "pgd3", "pgd2x2", "cw3", "square20"])
def test_every_registry_attack_has_one_signature_and_is_reproducible(standard_model, batch, name):
    x, y = batch
    x, y = x[:8], y[:8]
    attack = get_attack(name)
    state = torch.random.get_rng_state()
    first = attack.run(standard_model, x, y, EPS, 7)
    second = attack.run(standard_model, x, y, EPS, 7)
    assert torch.equal(first, second)
    assert (first - x).abs().max() <= EPS + 1e-6 and first.min() >= 0 and first.max() <= 1
    if attack.kind == "white-box":
        assert torch.equal(torch.random.get_rng_state(), state), "the attack disturbed the global random state"


def test_run_autoattack_is_the_resumable_driver(standard_model, batch):
    x, y = batch
    x, y = x[:8], y[:8]  # two batches of 4: the driver's batching is exercised
    flags = autoattack_flags(standard_model, x, y, "apgd-ce", EPS, batch_size=4, seed=1)
    x_adv = run_autoattack(standard_model, x, y, EPS, version="apgd-ce", batch_size=4, seed=1)
    with torch.no_grad(), eval_mode(standard_model):
        survived = standard_model(x_adv).argmax(1) == y
    assert torch.equal(survived, flags)
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    assert torch.equal(craft("apgd-ce", standard_model, x, y, EPS, seed=1, batch_size=4), x_adv)
