"""Issue 13's bad inputs: each one raises a clear error (type + key words), writes nothing, or now tells the truth.

Gates compare exact fractions, a seed reproduces a run, bundles round-trip every setting, resume refuses a changed
run, numbers are validated up front, eps has one rule, NaN pixels and float labels are refused.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.utils.data import Dataset, TensorDataset

from robustcompress import RobustCompressor
from robustcompress.cli import main
from robustcompress.cli.common import parse_eps
from robustcompress.data import check_images, load_data
from robustcompress.models import build_model
from robustcompress.trainer import TrainConfig
from robustcompress.verify import evaluate, evaluate_gate

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dict(epochs=1, steps=1, batch_size=64, lr=0.05, input_size=8, device="cpu", progress=False)



def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- 1. the gate compares exact fractions ----------------------------------------------------------------------------
class ConstantModel(nn.Module):
    """Always answers class 0 (with a zero input gradient, so FGSM leaves the images unchanged)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(x), 10)
        logits[:, 0] = 1.0
        return logits + 0 * x.sum()


def _report_with(correct: int, total: int = 20) -> dict:
    x = torch.rand(total, 3, 8, 8)
    y = torch.tensor([0] * correct + [1] * (total - correct))
    return evaluate(ConstantModel(), (x, y), attacks=("fgsm",), eps=0.0).to_dict()


def test_gate_passes_at_exactly_the_threshold():
    report = _report_with(9)  # 9/20 = 0.45 exactly; as a float32 accuracy it is 0.44999998...
    assert report["clean_acc"] < 0.45 and report["correct"] == {"clean": 9, "fgsm": 9, "worst_case": 9}
    gate = evaluate_gate(report, ["clean>=0.45", "worst_case>=45%"], fail_on_check_warnings=False)
    assert gate["passed"], gate["failures"]
    assert gate["requirements"][0]["correct"] == 9 and gate["requirements"][0]["total"] == 20


def test_strict_gate_fails_at_exactly_the_threshold():
    report = _report_with(2)  # 2/20 = 0.1 exactly; as a float32 accuracy it is 0.10000000149...
    assert report["robust_acc"]["fgsm"] > 0.1
    gate = evaluate_gate(report, ["fgsm>0.1"], fail_on_check_warnings=False)
    assert not gate["passed"]
    assert "fgsm accuracy is 0.1000 (2/20)" in gate["failures"][0]


def test_gate_on_a_report_without_counts_recovers_them_from_n_examples():
    report = _report_with(9)
    del report["correct"]
    assert evaluate_gate(report, ["clean>=0.45"], fail_on_check_warnings=False)["passed"]
    assert not evaluate_gate(report, ["clean>0.45"], fail_on_check_warnings=False)["passed"]


# -- 2. a seed reproduces a run -------------------------------------------------------------------------------------
def test_same_seed_gives_bit_identical_weights(digits8):
    train, test = digits8
    weights = []
    for _ in range(2):
        torch.manual_seed(len(weights))  # whatever ran before must not matter
        rc = RobustCompressor([], "test_efficientnet", method="pgd-at", seed=3, verify_attacks=(), **TINY)
        rc.fit(train, val_data=test)
        weights.append(rc.student.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


# -- 3. a bundle round-trips every setting --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rich_bundle(tmp_path_factory, digits8):
    """A bundle saved with a non-default value for every setting that has one."""
    train, test = digits8
    teachers = [build_model("test_resnet", 10, 8), build_model("test_efficientnet", 10, 8)]
    out = tmp_path_factory.mktemp("roundtrip") / "bundle"
    rc = RobustCompressor(
        teachers, "test_efficientnet", method="ard", method_kwargs={"alpha": 0.7, "temperature": 4.0},
        eps=4 / 255, step_size=1 / 255, steps=1, epochs=1, batch_size=32, lr=0.03, momentum=0.8, weight_decay=1e-3,
        schedule="step", augment=False, seed=5, input_size=8, teacher_weights=[1, 3], teacher_epochs=3,
        out_dir=out, verify_attacks=("fgsm",), verify_examples=8, progress=False, speed="reference", device="cpu",
    )
    rc.fit(train, val_data=test)
    return rc, out


def test_load_round_trips_every_field_of_describe(rich_bundle):
    rc, out = rich_bundle
    loaded = RobustCompressor.load(out, device="cpu")
    before, after = rc.describe(), loaded.describe()
    assert set(before) == set(after)
    for key in before:
        assert after[key] == before[key], key
    config = loaded.train_config
    assert (config.momentum, config.weight_decay, config.schedule, config.augment, config.speed) == (
        0.8, 1e-3, "step", False, "reference")
    assert (config.crop_padding, config.flip) == (rc.train_config.crop_padding, rc.train_config.flip)
    assert loaded.config == rc.config
    assert loaded.method_kwargs == {"alpha": 0.7, "temperature": 4.0} and loaded.method.alpha == 0.7
    assert loaded.teacher_weights.tolist() == [0.25, 0.75] and loaded.teacher_epochs == 3
    assert loaded.verify_attacks == ("fgsm",) and loaded.verify_examples == 8


def test_load_then_save_keeps_the_record(rich_bundle, tmp_path):
    _, out = rich_bundle
    original = (out / "config.json").read_bytes()
    RobustCompressor.load(out, device="cpu").save(out)
    assert (out / "config.json").read_bytes() == original


@pytest.mark.parametrize("edit, words", [
    (lambda cfg: cfg.pop("method_kwargs"), "lacks method_kwargs"),
    (lambda cfg: cfg["train_config"].pop("momentum"), "lacks train_config.momentum"),
    (lambda cfg: cfg.pop("bundle_version"), "no valid 'bundle_version'"),
    (lambda cfg: cfg.update(bundle_version=99), "newer than this robustcompress"),
    (lambda cfg: cfg["train_config"].update(warp_drive=True), "does not know: ['warp_drive']"),
])
def test_a_damaged_bundle_record_is_a_clear_error(rich_bundle, tmp_path, edit, words):
    _, out = rich_bundle
    cfg = json.loads((out / "config.json").read_text())
    edit(cfg)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="config.json") as info:
        RobustCompressor.load(broken, device="cpu")
    assert words in str(info.value)


# -- 4. resume refuses a different run ------------------------------------------------------------------------------
def test_resume_with_other_settings_is_refused_then_forced_and_recorded(digits8, tmp_path):
    train, test = digits8
    out = tmp_path / "run"
    common = dict(verify_attacks=("fgsm",), verify_examples=8, out_dir=out, **{**TINY, "epochs": 1})
    RobustCompressor([], "test_efficientnet", method="pgd-at", **common).fit(train, val_data=test)
    written = _snapshot(out)
    changed = {**common, "lr": 0.2, "steps": 2, "epochs": 2}
    with pytest.raises(ValueError, match="cannot resume") as info:
        RobustCompressor([], "test_efficientnet", method="trades", **changed).fit(train, val_data=test, resume=True)
    message = str(info.value)
    for field in ("lr: 0.05 in the checkpoint, 0.2 now", "steps", "epochs", "method: 'pgd-at'", "--force"):
        assert field in message
    assert _snapshot(out) == written  # nothing was trained or overwritten

    rc = RobustCompressor([], "test_efficientnet", method="pgd-at", **{**common, "epochs": 2, "lr": 0.2})
    rc.fit(train, val_data=test, resume=True, force=True)
    history = json.loads((out / "config.json").read_text())["history"]
    assert len(history) == 2 and "resumed_with_changes" not in history[0]
    assert history[1]["resumed_with_changes"] == {"epochs": {"checkpoint": 1, "now": 2},
                                                  "lr": {"checkpoint": 0.05, "now": 0.2}}


def test_resume_with_another_student_is_refused(digits8, tmp_path):
    train, test = digits8
    common = dict(verify_attacks=(), out_dir=tmp_path, **TINY)
    RobustCompressor([], "test_efficientnet", method="pgd-at", **common).fit(train, val_data=test)
    with pytest.raises(ValueError, match="student.*test_efficientnet"):
        RobustCompressor([], "test_resnet", method="pgd-at", **common).fit(train, val_data=test, resume=True)


def test_cli_force_needs_resume(tmp_path, capsys):
    assert main(["fit", "digits", "--force", "--out", str(tmp_path / "out")]) == 2
    assert "--force only applies to --resume" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# -- 5. numbers are validated at construction, in the API and the CLI -----------------------------------------------
@pytest.mark.parametrize("kwargs, words", [
    ({"epochs": 0}, "epochs=0 is too small"),
    ({"epochs": -3}, "epochs=-3 is too small"),
    ({"epochs": 2.5}, "epochs must be a whole number"),
    ({"epochs": "10"}, "epochs must be a whole number"),
    ({"steps": 0}, "steps must be at least 1"),
    ({"steps": -1}, "steps=-1 is too small"),
    ({"step_size": -0.01}, "step_size -0.01 is outside [0, 1]"),
    ({"step_size": 0.0}, "needs step_size > 0"),
    ({"batch_size": 0}, "batch_size=0 is too small"),
    ({"lr": 0}, "lr=0 must be above 0"),
    ({"lr": float("nan")}, "lr must be a finite number"),
    ({"momentum": 1.0}, "momentum=1.0 must be below 1"),
    ({"weight_decay": -1e-4}, "weight_decay=-0.0001 must be at least 0"),
    ({"eps": 1.5}, "eps 1.5 is outside [0, 1]"),
    ({"eps": -0.1}, "eps -0.1 is outside [0, 1]"),
    ({"schedule": "linear"}, "unknown schedule 'linear'"),
    ({"teacher_epochs": 0}, "teacher_epochs=0 is too small"),
    ({"verify_examples": -5}, "verify_examples=-5 is too small"),
    ({"num_classes": 1}, "num_classes=1 is too small"),
    ({"input_size": 0}, "input_size=0 is too small"),
])
def test_bad_numbers_are_refused_at_construction(kwargs, words):
    with pytest.raises(ValueError) as info:
        RobustCompressor([], "test_efficientnet", method="pgd-at", **kwargs)
    assert words in str(info.value)


def test_clean_training_needs_no_attack_steps():
    rc = RobustCompressor([], "test_efficientnet", method="standard", steps=0, eps=8 / 255)
    assert rc.config.steps == 0
    with pytest.raises(ValueError, match="epochs=0 is too small"):
        TrainConfig(epochs=0)


def test_negative_n_examples_is_refused_not_a_silent_slice(digits8):
    _, test = digits8
    with pytest.raises(ValueError, match="n_examples=-5 must be a whole number of at least 1"):
        evaluate(ConstantModel(), test, attacks=("fgsm",), n_examples=-5)


@pytest.mark.parametrize("argv, words", [  # fit's settings: tests/test_cli.py (CompressConfig checks them)
    (["evaluate", "runs/x", "digits", "--n-examples", "-5"], "argument --n-examples: -5 is too small"),
    (["export", "runs/x", "--examples", "0"], "argument --examples: 0 is too small"),
    (["export", "runs/x", "--tolerance", "0"], "argument --tolerance: 0 must be a finite number above 0"),
])
def test_cli_refuses_bad_numbers_before_doing_anything(argv, words, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and words in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_config_numbers_are_validated(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("data: digits\nmethod: pgd-at\nepochs: 0\n")
    assert main(["fit", "--config", str(config), "--out", str(tmp_path / "out")]) == 2
    assert "epochs=0 is too small" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# -- 6. one eps rule everywhere -------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, value", [("8/255", 8 / 255), ("0.0314", 0.0314), ("1.0", 1.0), ("0", 0.0),
                                         (0.5, 0.5), (" 4/255 ", 4 / 255)])
def test_eps_accepts_fractions_and_decimals_up_to_one(text, value):
    assert parse_eps(text) == pytest.approx(value)


@pytest.mark.parametrize("text, words", [
    ("8", "did you mean 8/255"),
    (8, "did you mean 8/255"),
    ("2", "did you mean 2/255"),
    ("1", "ambiguous"),
    (1, "ambiguous"),
    ("2.5", "outside [0, 1]"),
    ("-0.1", "outside [0, 1]"),
    ("eight", "not a number"),
    ("8/0", "not a number"),
    (True, "must be a number"),
])
def test_eps_rejects_integers_and_values_above_one_with_a_hint(text, words):
    with pytest.raises(ValueError) as info:
        parse_eps(text)
    assert words in str(info.value)


@pytest.mark.parametrize("argv", [["evaluate", "runs/x", "digits", "--eps", "8"],  # fit's --eps: tests/test_cli.py
                                  ["evaluate", "runs/x", "digits", "--eps-sweep", "0", "8"]])
def test_every_subcommand_uses_the_eps_rule(argv, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    assert "did you mean 8/255" in capsys.readouterr().err


@pytest.mark.parametrize("line, words", [("eps: 8", "did you mean 8/255"), ("eps: 1", "ambiguous"),
                                         ("step_size: 2", "did you mean 2/255"),
                                         ("eps: 8/255\nepochs: 0", "epochs=0 is too small")])
def test_config_files_use_the_eps_rule(line, words, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text(f"data: digits\nmethod: pgd-at\n{line}\n")
    assert main(["fit", "--config", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


# -- 7. NaN pixels, unchecked batches and float labels --------------------------------------------------------------
def test_nan_pixels_fail_the_range_check():
    x = torch.rand(4, 3, 8, 8)
    x[2, 1, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="1 NaN pixel values \\(the first in image 2\\)"):
        check_images(x)


def test_an_all_nan_test_set_is_refused_not_scored(tmp_path):
    x = torch.full((16, 3, 8, 8), float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        evaluate(ConstantModel(), (x, torch.zeros(16, dtype=torch.long)), attacks=("fgsm",))
    with pytest.raises(ValueError, match="NaN"):
        load_data(TensorDataset(x, torch.zeros(16, dtype=torch.long)))


class LateBadImages(Dataset):
    """Good images at index 0 (what a probe of item 0 sees), 0..255 pixel values from index 40 on."""

    def __init__(self, base: TensorDataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y = self.base[i]
        return (x * 255 if i >= 40 else x), int(y)


def _tiny_pgd_at(out: Path) -> RobustCompressor:
    return RobustCompressor([], "test_efficientnet", method="pgd-at", out_dir=out, verify_attacks=(), **TINY)


def test_a_dataset_is_checked_batch_by_batch_not_only_at_index_0(digits8, tmp_path):
    train, test = digits8
    rc = _tiny_pgd_at(tmp_path / "out")
    with pytest.raises(ValueError, match=r"train_data images in this batch must lie in \[0, 1\]"):
        rc.fit(LateBadImages(train), val_data=test)
    assert not (tmp_path / "out" / "config.json").exists()


def _nan_in_sample_5(train: TensorDataset) -> TensorDataset:
    x, y = train.tensors
    x = x.clone()
    x[5, 1, 2, 3] = float("nan")
    return TensorDataset(x, y)


def test_a_tensor_dataset_with_one_nan_pixel_in_sample_5_is_refused_before_training(digits8, tmp_path):
    train, test = digits8
    rc = _tiny_pgd_at(tmp_path / "out")
    with pytest.raises(ValueError, match=r"train_data images contain 1 NaN pixel values \(the first in image 5\)"):
        rc.fit(_nan_in_sample_5(train), val_data=test)
    with pytest.raises(ValueError, match=r"val_data images contain 1 NaN pixel values \(the first in image 5\)"):
        rc.fit(train, val_data=_nan_in_sample_5(test))
    assert not (tmp_path / "out" / "config.json").exists()


def test_the_trainer_checks_an_in_memory_training_set_it_is_handed_directly(digits8):
    from robustcompress.methods import create_method
    from robustcompress.trainer import train

    student = build_model("test_efficientnet", 10, 8)
    config = TrainConfig(epochs=1, batch_size=64, eps=0.0, steps=0, progress=False)
    with pytest.raises(ValueError, match=r"NaN pixel values \(the first in image 5\)"):
        train(student, [], create_method("standard"), _nan_in_sample_5(digits8[0]), 10, config, torch.device("cpu"))


def test_float_labels_are_refused_not_truncated(digits8):
    train, _ = digits8
    x, y = train.tensors
    fractional = y.float()
    fractional[5] = 2.5
    with pytest.raises(ValueError, match="whole-number class indices; got 2.5"):
        load_data(TensorDataset(x, fractional))
    assert load_data(TensorDataset(x, y.float())).num_classes == 10  # whole numbers stored as floats are fine


def test_string_and_fractional_labels_in_an_npz_are_refused(tmp_path):
    images = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    for labels, words in ((np.array(["cat", "dog", "cat", "dog"]), "integer class indices; got <U3"),
                          (np.array([0.0, 1.0, 1.5, 0.0]), "got 1.5")):
        path = tmp_path / "data.npz"
        np.savez(path, x_train=images, y_train=labels, x_test=images, y_test=np.zeros(4, dtype=np.int64))
        with pytest.raises(ValueError, match="y_train") as info:
            load_data(str(path))
        assert words in str(info.value)


# -- 9. the demo handler refuses NaN --------------------------------------------------------------------------------
def test_demo_handler_refuses_a_nan_tensor():
    pytest.importorskip("PIL")
    from robustcompress.apps.handler import image_to_tensor

    x = torch.rand(1, 3, 8, 8)
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="1 NaN or infinite values"):
        image_to_tensor(x, 8)
    x[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        image_to_tensor(x, 8)


# -- the poor ones: one error boundary per entry point --------------------------------------------------------------
def _fail_with(exc: BaseException):
    def run_quickstart(*args, **kwargs):
        raise exc

    return run_quickstart


@pytest.mark.parametrize("exc, words", [
    (IndexError("list index out of range"), "error: unexpected IndexError: list index out of range (rerun with "
                                            "--debug for the traceback"),
    (KeyError("robust_acc"), "error: unexpected KeyError: 'robust_acc'"),
    (ZeroDivisionError("division by zero"), "error: unexpected ZeroDivisionError"),
    (OSError(28, "No space left on device", "/big/student.safetensors"),
     "error: No space left on device (/big/student.safetensors); free some disk space"),
    (PermissionError(13, "Permission denied", "/ro/out"), "error: Permission denied (/ro/out); pass a path you may"),
    (ValueError("first line\nsecond line"), "error: first line [more with --debug]"),
])
def test_cli_prints_one_line_for_any_exception(exc, words, monkeypatch, capsys):
    monkeypatch.setattr("robustcompress.quickstart.run_quickstart", _fail_with(exc))
    assert main(["quickstart", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("robustcompress quickstart: ") and words in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setattr("robustcompress.quickstart.run_quickstart", _fail_with(IndexError("boom")))
    with pytest.raises(IndexError, match="boom"):
        main(["--debug", "quickstart"])


@pytest.mark.parametrize("argv, words", [
    (["fit", "digits", "--method", "pgd-at"], "fit: interrupted; rerun the same command with --resume"),
    (["fit", "digits", "--method", "pgd-at", "--resume"], "fit: interrupted; rerun the same command to resume"),
])
def test_ctrl_c_says_how_to_resume(argv, words, monkeypatch, capsys, tmp_path):
    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(RobustCompressor, "fit", interrupted)
    assert main([*argv, "--out", str(tmp_path / "out")]) == 130
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("name, text, words", [
    ("run.yaml", "data: digits\nepochs: [1, 2\n", "is not valid YAML at line"),
    ("run.json", '{"data": "digits", "epochs": }', "is not valid JSON at line 1"),
    ("run.yaml", "- digits\n- 10\n", "must hold a mapping"),
])
def test_config_parse_errors_name_the_file(name, text, words, tmp_path, capsys):
    config = tmp_path / name
    config.write_text(text)
    assert main(["fit", "--config", str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert words in err and name in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_method_arg_parse_errors_name_the_argument(tmp_path, capsys):
    argv = ["fit", "digits", "--method", "trades", "--method-arg", "beta=tru", "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    assert "--method-arg 'beta=tru'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_runtime_prints_one_line_for_any_exception(tmp_path, monkeypatch, capsys):
    runtime = pytest.importorskip("robustcompress_runtime.runtime")
    not_onnx = tmp_path / "model.onnx"
    not_onnx.write_bytes(b"not a model")
    assert runtime.main([str(not_onnx), "x.png"]) == 2
    err = capsys.readouterr().err
    assert "is not a readable ONNX model" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1

    def broken(*args, **kwargs):
        raise IndexError("tuple index out of range")

    monkeypatch.setattr(runtime, "load_model", broken)
    assert runtime.main([str(not_onnx), "x.png"]) == 2
    assert "unexpected IndexError: tuple index out of range" in capsys.readouterr().err
    with pytest.raises(IndexError):
        runtime.main([str(not_onnx), "x.png", "--debug"])

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runtime, "load_model", interrupted)
    assert runtime.main([str(not_onnx), "x.png"]) == 130
    assert "interrupted" in capsys.readouterr().err
