"""Verification: attack suite, per-sample worst case, gradient-masking checks, reports, resumable AutoAttack."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from conftest import foreign_onnx, one_line

from robustcompress.cli import main
from robustcompress.verify import (
    CheckSettings,
    evaluate,
    get_attack,
    resolve_attacks,
    verify_model,
    write_report,
)
from robustcompress.attacks import autoattack_flags

EPS = 32 / 255  # large enough that PGD breaks most digits on an undefended net
N = 48
# Cheaper than the defaults (100 steps, 5 restarts, 1000 queries) but the same checks.
SETTINGS = CheckSettings(strong_steps=40, restarts=2, square_queries=300)
DOCS = Path(__file__).resolve().parents[1] / "docs" / "verification.md"


def _tiny_cnn(digits16, seed: int) -> nn.Module:
    """A small undefended CNN trained for a few seconds on digits (about 95% clean accuracy)."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 4 * 4, 10),
    )
    x, y = digits16.train.tensors
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(120):
        idx = torch.randint(0, len(x), (64,), generator=generator)
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


class SaturatedLogits(nn.Module):
    """Planted gradient masking: logits scaled by 1e4, so softmax saturates and the CE gradient is exactly zero."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * 1e4


class QuantisedInput(nn.Module):
    """Planted gradient masking: the input is rounded to 8 grey levels, so every input gradient is zero."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.round(x * 8) / 8)


# The models here are tiny: one thread is faster than two, and much faster on a busy machine.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def nets(digits16):
    return {"normal": _tiny_cnn(digits16, 0), "other": _tiny_cnn(digits16, 1)}


@pytest.fixture(scope="module")
def verified(nets, digits16):
    """Full verifications (fgsm, pgd20, cw30 + every check + a sweep) of the normal and the two masked models."""
    models = {"normal": nets["normal"], "saturated": SaturatedLogits(nets["normal"]),
              "quantised": QuantisedInput(nets["normal"])}
    return {
        name: verify_model(model, digits16.test, attacks=["fgsm", "pgd20", "cw30"], eps=EPS, n_examples=N,
                           batch_size=64, checks=SETTINGS, transfer_from={"other": nets["other"]},
                           eps_sweep=[0, 8 / 255, 16 / 255, EPS], references={"other": nets["other"]},
                           model_info={"name": name}, data_info={"name": "digits"})
        for name, model in models.items()
    }


def test_a_normal_model_passes_every_check(verified):
    result = verified["normal"]
    statuses = {c.name: c.status for c in result.checks}
    assert result.checks_passed, [c.message for c in result.checks if c.status == "warn"]
    assert statuses == {
        "finite_logits_nonzero_gradients": "pass", "accuracy_decreases_with_eps": "pass",
        "large_eps_breaks_model": "pass", "blackbox_not_stronger": "pass", "more_iterations_not_weaker": "pass",
        "transfer_not_stronger": "pass", "autoattack_flags": "skip",
    }
    assert result.report.clean_acc > 0.85 and result.report.robust_acc["pgd20"] < 0.5


@pytest.mark.parametrize("masked", ["saturated", "quantised"])
def test_planted_gradient_masking_is_flagged_while_plain_pgd_calls_it_robust(masked, verified, nets, digits16):
    plain = evaluate(nets["normal"], digits16.test, ["pgd20"], eps=EPS, n_examples=N)
    result = verified[masked]
    # What a naive evaluation would publish: PGD-20 accuracy near the clean accuracy, far above the real model's.
    assert result.report.robust_acc["pgd20"] >= 0.9
    assert result.report.robust_acc["pgd20"] > plain.robust_acc["pgd20"] + 0.5
    status = {c.name: c.status for c in result.checks}
    assert status["finite_logits_nonzero_gradients"] == "warn"
    assert status["large_eps_breaks_model"] == "warn"
    assert not result.checks_passed
    gradients = next(c for c in result.checks if c.name == "finite_logits_nonzero_gradients")
    assert gradients.numbers["zero_gradient_fraction_ce_clean"] > 0.5
    # The gate refuses the model although its PGD number clears the bar.
    gate = result.apply_gate(["pgd20>=0.5"])
    assert not gate["passed"] and gate["requirements"][0]["met"]
    assert any("finite_logits_nonzero_gradients" in f for f in gate["failures"])


def test_input_quantisation_is_caught_by_black_box_and_transfer_attacks(verified):
    status = {c.name: c.status for c in verified["quantised"].checks}
    assert status["blackbox_not_stronger"] == "warn" and status["transfer_not_stronger"] == "warn"
    # cw30 (margin loss) still has gradients through the saturated logits and breaks that model.
    assert verified["saturated"].report.robust_acc["cw30"] < 0.5


def test_worst_case_is_at_most_every_per_attack_accuracy(verified):
    for result in verified.values():
        report = result.report
        flags = torch.tensor([report.per_sample[k] for k in report.per_sample])
        assert report.worst_case_acc == pytest.approx(flags.all(dim=0).float().mean().item())
        assert report.worst_case_acc <= report.clean_acc
        for acc in report.robust_acc.values():
            assert report.worst_case_acc <= acc
    saturated = verified["saturated"].report
    assert saturated.worst_case_acc < saturated.robust_acc["pgd20"]


def test_report_files_have_the_documented_keys_and_a_png_plot(verified, tmp_path):
    paths = write_report(verified["normal"], tmp_path)
    report = json.loads((tmp_path / "report.json").read_text())
    schema = DOCS.read_text().split("## report.json schema")[1]
    documented = set(re.findall(r"^\| `([a-z_0-9]+)` \|", schema, flags=re.M))
    assert {"schema_version", "device", "eps", "norm", "n_examples", "attack_settings", "seed", "timings_s",
            "checks", "worst_case_acc", "eps_sweep"} <= documented
    assert set(report) == documented, "report.json and docs/verification.md disagree"
    assert report["norm"] == "Linf" and report["eps"] == pytest.approx(EPS) and report["n_examples"] == N
    assert set(report["attack_settings"]) == {"fgsm", "pgd20", "cw30"}
    assert report["attack_settings"]["pgd20"]["steps"] == 20
    assert report["attack_settings"]["pgd20"]["step_size"] == "eps/4"
    assert {"clean", "fgsm", "pgd20", "cw30", "checks", "eps_sweep", "total"} <= set(report["timings_s"])
    assert all(set(c) == {"name", "status", "message", "numbers"} for c in report["checks"])
    sweep = report["eps_sweep"]
    assert sweep["eps"] == sorted(sweep["eps"]) and set(sweep["accuracy"]) == {"normal", "other"}
    png = paths["plot"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(paths["plot"]) as image:
        assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200
    markdown = (tmp_path / "report.md").read_text()
    assert "![accuracy vs eps](accuracy_vs_eps.png)" in markdown and "| pgd20 |" in markdown
    assert "Gradient-masking sanity checks" in markdown


class _Interruptible(nn.Module):
    """Counts forward passes and raises KeyboardInterrupt after ``stop_after`` of them (None: never)."""

    def __init__(self, net: nn.Module, stop_after: int | None = None) -> None:
        super().__init__()
        self.net, self.stop_after, self.calls = net, stop_after, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.stop_after is not None and self.calls > self.stop_after:
            raise KeyboardInterrupt("simulated interruption")
        return self.net(x)


def test_autoattack_resumes_an_interrupted_run_with_the_same_result(nets, digits16, tmp_path):
    x, y = digits16.test.tensors[0][:6], digits16.test.tensors[1][:6]
    eps = 16 / 255  # APGD-CE breaks some of these images, APGD-T gets the rest to attack
    uninterrupted = _Interruptible(nets["normal"])
    expected = autoattack_flags(uninterrupted, x, y, "autoattack-fast", eps, batch_size=3)

    state = tmp_path / "aa.json"
    interrupted = _Interruptible(nets["normal"], stop_after=uninterrupted.calls // 2)
    with pytest.raises(KeyboardInterrupt):
        autoattack_flags(interrupted, x, y, "autoattack-fast", eps, batch_size=3, state_path=state)
    saved = json.loads(state.read_text())
    assert saved["done"] != ["apgd-ce", "apgd-t"]

    resumed = _Interruptible(nets["normal"])
    flags = autoattack_flags(resumed, x, y, "autoattack-fast", eps, batch_size=3, state_path=state)
    assert torch.equal(flags, expected)
    assert resumed.calls < uninterrupted.calls  # finished batches were not attacked again
    assert json.loads(state.read_text())["done"] == ["apgd-ce", "apgd-t"]


def test_autoattack_state_of_another_evaluation_is_refused(nets, digits16, tmp_path):
    x, y = digits16.test.tensors[0][:4], digits16.test.tensors[1][:4]
    state = tmp_path / "aa.json"
    autoattack_flags(nets["normal"], x, y, "apgd-ce", 8 / 255, state_path=state)
    with pytest.raises(ValueError, match="different evaluation"):
        autoattack_flags(nets["normal"], x, y, "apgd-ce", 4 / 255, state_path=state)


def test_evaluate_keeps_autoattack_state_per_model_and_reuses_it(nets, digits16, tmp_path):
    first = evaluate(nets["normal"], digits16.test, ["apgd-ce"], eps=8 / 255, n_examples=4, state_dir=tmp_path)
    files = list(tmp_path.glob("apgd-ce-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["done"] == ["apgd-ce"]
    again = evaluate(nets["normal"], digits16.test, ["apgd-ce"], eps=8 / 255, n_examples=4, state_dir=tmp_path)
    assert again.per_sample == first.per_sample
    evaluate(nets["other"], digits16.test, ["apgd-ce"], eps=8 / 255, n_examples=4, state_dir=tmp_path)
    assert len(list(tmp_path.glob("apgd-ce-*.json"))) == 2


def test_presets_and_attack_names():
    assert resolve_attacks(preset="fast") == ["fgsm", "pgd20", "cw30", "autoattack-fast"]
    assert resolve_attacks(["standard", "pgd20", "square"]) == ["fgsm", "pgd20", "cw30", "autoattack", "square"]
    assert get_attack("pgd20x5").settings["restarts"] == 5
    assert get_attack("square1000").kind == "black-box" and get_attack("square").settings["queries"] == 5000
    assert get_attack("cw30").settings["loss"] == "cw-margin"
    with pytest.raises(ValueError, match="unknown attack 'pgd'"):
        resolve_attacks(["pgd"])
    with pytest.raises(ValueError, match="unknown preset"):
        resolve_attacks(preset="thorough")


def test_pgd_restarts_are_at_least_as_strong_as_one_run(nets, digits16):
    x, y = digits16.test.tensors[0][:32], digits16.test.tensors[1][:32]
    one = evaluate(nets["normal"], (x, y), ["pgd5"], eps=6 / 255)
    three = evaluate(nets["normal"], (x, y), ["pgd5x3"], eps=6 / 255)
    # Restart 0 is the single run, so every sample it breaks stays broken.
    assert all(a or not b for a, b in zip(one.per_sample["pgd5"], three.per_sample["pgd5x3"], strict=True))


def test_black_box_only_verification_refuses_gradient_attacks(nets, digits16):
    with pytest.raises(ValueError, match="need gradients"):
        verify_model(nets["normal"], digits16.test, ["pgd20"], n_examples=4, white_box=False)


@pytest.mark.parametrize("item, words", [("restarts=-3", "restarts=-3 is too small"),
                                         ("strong_steps=0", "strong_steps=0 is too small"),
                                         ("square_queries=-1", "square_queries=-1 is too small"),
                                         ("tolerance=nan", "tolerance must be a finite number"),
                                         ("large_eps=2", "large_eps=2.0 must be at most 1"),
                                         ("sweep_factors=0.5,-1", "sweep_factors[1]=-1.0 must be above 0")])
def test_check_settings_out_of_range_are_refused_naming_them(item, words):
    with pytest.raises(ValueError) as info:
        CheckSettings.from_items("full", [item])
    assert words in str(info.value) and "\n" not in str(info.value)


def test_cli_evaluate_refuses_a_negative_restart_count_before_loading(tmp_path, capsys):
    from robustcompress.cli import main

    assert main(["evaluate", str(tmp_path / "missing"), "digits", "--check-arg", "restarts=-3"]) == 2
    assert "restarts=-3 is too small" in capsys.readouterr().err


def test_a_zero_batch_size_is_refused_naming_it():
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    with pytest.raises(ValueError, match="batch_size=0 is too small"):
        evaluate(model, (torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])), attacks=("fgsm",), batch_size=0)


def test_cli_evaluate_explains_a_foreign_onnx_it_cannot_feed(tmp_path, capsys):
    path = foreign_onnx(tmp_path / "nhwc.onnx", "nhwc")
    assert main(["evaluate", str(path), "digits", "--out", str(tmp_path / "rep")]) == 2
    line = one_line(capsys.readouterr().err)
    assert "nhwc.onnx takes x: tensor(float) ['n', 8, 8, 3]" in line
    assert "channels-last (NHWC)" in line and "'robustcompress export'" in line
    assert not (tmp_path / "rep").exists()


def test_cli_evaluate_runs_a_compatible_foreign_onnx_with_a_note(tmp_path, capsys):
    path = foreign_onnx(tmp_path / "fixed.onnx", "nchw")  # fixed batch 1 at 8x8: digits are loaded at 8x8 for it
    argv = ["evaluate", str(path), "digits", "--attacks", "square5", "--n-examples", "4", "--checks", "none",
            "--no-progress", "--json", str(tmp_path / "r.json")]
    assert main(argv) == 0
    assert "note: fixed.onnx has no robustcompress metadata" in capsys.readouterr().err
    import json

    report = json.loads((tmp_path / "r.json").read_text())
    assert "no robustcompress metadata" in report["model"]["note"]
