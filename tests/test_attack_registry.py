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


def test_a_user_registered_attack_runs_through_evaluate_by_name(standard_model, batch, monkeypatch):
    """register_attack makes a user's attack a name like pgd20: evaluate runs it, list_attacks shows it, and a
    clash with a built-in or an earlier registration is refused in one line."""
    from robustcompress.attacks import list_attacks, register_attack
    from robustcompress.attacks import registry
    from robustcompress.verify import evaluate

    # registrations are process-wide: this test's own end with it
    monkeypatch.setattr(registry, "_FAMILIES", list(registry._FAMILIES))
    calls = []

    def flip_sign_fgsm(model, x, y, eps, seed):  # FGSM written by a user, counting its calls
        calls.append(len(x))
        x = x.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        (grad,) = torch.autograd.grad(loss, x)
        return (x + eps * grad.sign()).clamp(0, 1).detach()

    register_attack("my-fgsm", flip_sign_fgsm, settings={"steps": 1})
    assert "my-fgsm" in list_attacks() and "pgd20" in list_attacks()
    x, y = batch
    data = torch.utils.data.TensorDataset(x, y)
    report = evaluate(standard_model, data, attacks=("my-fgsm", "fgsm"), eps=8 / 255, n_examples=len(x), seed=0,
                      progress=False)
    assert sum(calls) == len(x) and report.attack_settings["my-fgsm"] == {"steps": 1}
    # the same function as the built-in FGSM gives the same verdict on every image
    assert report.per_sample["my-fgsm"] == report.per_sample["fgsm"]
    with pytest.raises(ValueError, match="'pgd20' is a built-in attack"):
        register_attack("pgd20", flip_sign_fgsm)
    with pytest.raises(ValueError, match="registered already; pass replace=True"):
        register_attack("my-fgsm", flip_sign_fgsm)
    register_attack("my-fgsm", flip_sign_fgsm, kind="white-box", replace=True)
    with pytest.raises(ValueError, match="kind 'grey-box' must be one of"):
        register_attack("other", flip_sign_fgsm, kind="grey-box")
    with pytest.raises(ValueError, match="unknown attack 'nope'.*my-fgsm.*register_attack"):
        evaluate(standard_model, data, attacks=("nope",), eps=8 / 255, progress=False)


def test_list_attacks_shows_every_family_once_and_the_one_presets_table():
    """Every built-in name list_attacks shows is answered by its family; the presets are the registry's one table."""
    from robustcompress.attacks import PRESETS, autoattack, list_attacks

    names = list_attacks()
    assert {"fgsm", "pgd20", "pgd20x5", "cw30", "square", "autoattack", "autoattack-fast", "apgd-ce"} <= set(names)
    assert names[-len(PRESETS):] == list(PRESETS) and len(set(names)) == len(names)
    assert all(get_attack(n).name == n for n in names if n not in PRESETS)
    assert not hasattr(autoattack, "PRESETS")  # AutoAttack's suites are SUITES, not a second presets table
