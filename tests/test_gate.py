"""The release gate and `robustcompress evaluate`: bundles, ONNX files, exit codes, and fit's verification pass."""
from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch.utils.data import TensorDataset
from conftest import ConstantModel

from robustcompress import RobustCompressor
from robustcompress.cli import main
from robustcompress.verify import evaluate, evaluate_gate, format_gate, parse_requirement

QUICK = ["--attacks", "fgsm", "pgd10", "--n-examples", "16", "--checks", "quick", "--no-progress"]


# The models here are tiny: one thread is faster than two, and much faster on a busy machine.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, digits16):
    """A student briefly trained by fit(), whose verification pass ran on the first 16 digits test images."""
    x, y = digits16.train.tensors
    xt, yt = digits16.test.tensors
    out = tmp_path_factory.mktemp("gate") / "bundle"
    rc = RobustCompressor([], "test_efficientnet", method="pgd-at", epochs=2, steps=1, batch_size=64, lr=0.05,
                          input_size=16, device="cpu", out_dir=out, verify_attacks=("fgsm", "pgd10"),
                          verify_examples=16, progress=False)
    rc.fit(TensorDataset(x[:384], y[:384]), val_data=TensorDataset(xt[:64], yt[:64]))
    return out


def test_fit_ends_with_a_verification_pass_saved_in_the_bundle(bundle):
    metrics = json.loads((bundle / "config.json").read_text())["metrics"]
    assert metrics["n_examples"] == 16 and set(metrics["robust_acc"]) == {"fgsm", "pgd10"}
    assert metrics["worst_case_acc"] <= min(metrics["robust_acc"].values())
    assert metrics["checks"]["finite_logits_nonzero_gradients"] == "pass"
    assert metrics["checks"]["more_iterations_not_weaker"] in ("pass", "warn")  # fgsm vs pgd10 was compared
    assert metrics["checks"]["large_eps_breaks_model"] == "skip"  # quick level: no extra attacks in fit
    report = json.loads((bundle / "verification" / "report.json").read_text())
    assert report["clean_acc"] == metrics["clean_acc"] and report["check_settings"]["level"] == "quick"
    assert RobustCompressor.load(bundle).metrics["checks_passed"] == metrics["checks_passed"]


def test_verify_method_writes_reports_with_teachers_and_baseline_in_the_plot(bundle, tmp_path):
    rc = RobustCompressor.load(bundle, device="cpu")
    result = rc.verify("digits", attacks=["fgsm"], n_examples=16, checks="quick", eps_sweep=[0, 4 / 255],
                       baseline=bundle, require=["clean>=0"], out_dir=tmp_path)
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["eps_sweep"]["accuracy"]) == {"student (test_efficientnet)", "baseline (test_efficientnet)"}
    # The baseline here is the student itself: both curves must coincide.
    curves = list(report["eps_sweep"]["accuracy"].values())
    assert curves[0] == curves[1] and report["eps_sweep"]["eps"] == pytest.approx([0, 4 / 255, 8 / 255])
    assert report["gate"]["passed"] == result.gate_passed and report["model"]["method"] == "pgd-at"
    assert (tmp_path / "accuracy_vs_eps.png").is_file() and (tmp_path / "report.md").is_file()


def test_gate_exits_zero_at_the_threshold_and_one_above_it(bundle, tmp_path, capsys):
    clean = json.loads((bundle / "config.json").read_text())["metrics"]["clean_acc"]  # k/16: exact in 4 digits
    out = tmp_path / "pass"
    code = main(["evaluate", str(bundle), "digits", *QUICK, "--require", f"clean>={clean:.4f}",
                 "--require", "worst_case>=0", "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "GATE PASSED" in printed.out
    report = json.loads((out / "report.json").read_text())
    assert report["clean_acc"] == pytest.approx(clean)  # the same 16 images fit verified
    assert report["gate"]["passed"] and [r["met"] for r in report["gate"]["requirements"]] == [True, True]
    assert (out / "report.md").is_file() and not (out / "accuracy_vs_eps.png").exists()  # no sweep, no plot

    code = main(["evaluate", str(bundle), "digits", *QUICK, "--require", f"clean>{clean:.4f}",
                 "--json", str(tmp_path / "fail.json")])
    printed = capsys.readouterr()
    assert code == 1
    assert "GATE FAILED" in printed.err and f"clean accuracy is {clean:.4f}" in printed.err
    assert json.loads((tmp_path / "fail.json").read_text())["gate"]["passed"] is False


def test_gate_requirements_are_checked_before_attacking(bundle, capsys):
    assert main(["evaluate", str(bundle), "digits", *QUICK, "--require", "autoattack>=0.45"]) == 2
    err = capsys.readouterr().err
    assert "needs the attack 'autoattack'" in err and "--preset standard" in err
    assert main(["evaluate", str(bundle), "digits", *QUICK, "--require", "autoattack=0.45"]) == 2
    assert "METRIC>=VALUE" in capsys.readouterr().err
    assert main(["evaluate", "lcnet_050", "digits", *QUICK]) == 2
    assert "NAME=CHECKPOINT" in capsys.readouterr().err


def test_a_timm_checkpoint_can_be_verified(bundle, tmp_path, capsys):
    spec = f"test_efficientnet={bundle / 'student.safetensors'}"
    assert main(["evaluate", spec, "digits", "--input-size", "16", *QUICK, "--eps", "8/255", "--eps-sweep", "0",
                 "4/255", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["model"]["source"] == "timm" and report["eps_sweep"]["eps"] == pytest.approx([0, 4 / 255, 8 / 255])
    assert (tmp_path / "accuracy_vs_eps.png").read_bytes()[:4] == b"\x89PNG"


@pytest.fixture(scope="module")
def onnx_file(bundle, tmp_path_factory):
    """The bundle's student as ONNX in a folder of its own (so no twin is found next to it), with SDK metadata."""
    import onnx

    student = RobustCompressor.load(bundle, device="cpu").student
    path = tmp_path_factory.mktemp("onnx") / "student.onnx"
    # The TorchScript exporter takes a fraction of a second; the SDK's own (dynamo) export takes several.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(student, (torch.rand(2, 3, 16, 16),), str(path), dynamo=False, input_names=["image"],
                          output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    proto = onnx.load(str(path))
    for key, value in {"input_size": "16", "student": '"test_efficientnet"', "eps": str(8 / 255)}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    return path


def test_onnx_is_attacked_through_its_pytorch_twin(bundle, onnx_file, tmp_path):
    metrics = json.loads((bundle / "config.json").read_text())["metrics"]
    assert main(["evaluate", str(onnx_file), "digits", "--bundle", str(bundle), *QUICK,
                 "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert "twin" in report["model"]["attacked_via"] and report["model"]["twin_max_abs_logit_diff"] < 1e-4
    # Same images, eps and seed as fit's verification: the exported file is exactly as robust as the student.
    assert report["robust_acc"] == pytest.approx(metrics["robust_acc"])


def test_onnx_without_twin_gets_black_box_attacks_only(onnx_file, tmp_path, capsys):
    assert main(["evaluate", str(onnx_file), "digits", "--attacks", "square200", "--n-examples", "8",
                 "--no-progress", "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert "black-box" in report["model"]["attacked_via"] and set(report["robust_acc"]) == {"square200"}
    assert {c["status"] for c in report["checks"]} == {"skip"}
    assert main(["evaluate", str(onnx_file), "digits", "--attacks", "pgd10", "--n-examples", "8"]) == 2
    assert "need gradients" in capsys.readouterr().err


def test_requirements_parse_fractions_and_percentages():
    assert parse_requirement("autoattack>=0.45").threshold == 0.45
    req = parse_requirement(" clean >= 80% ")
    assert (req.metric, req.op, req.threshold) == ("clean", ">=", pytest.approx(0.8))
    with pytest.raises(ValueError, match="fractions in"):
        parse_requirement("clean>=80")
    with pytest.raises(ValueError, match="unknown attack 'autoatack'"):
        parse_requirement("autoatack>=0.4")


def test_gate_fails_on_a_warning_check_even_when_every_number_is_met():
    report = {"clean_acc": 0.9, "worst_case_acc": 0.5, "robust_acc": {"autoattack": 0.5},
              "checks": [{"name": "blackbox_not_stronger", "status": "warn", "message": "Square breaks more"},
                         {"name": "transfer_not_stronger", "status": "skip", "message": "no source"}]}
    gate = evaluate_gate(report, ["autoattack>=0.45", "clean>=0.8"])
    assert not gate["passed"] and all(r["met"] for r in gate["requirements"])
    assert "blackbox_not_stronger" in format_gate(gate)
    assert evaluate_gate(report, ["autoattack>=0.45"], fail_on_check_warnings=False)["passed"]
    report["checks"][0]["status"] = "pass"
    assert evaluate_gate(report, ["autoattack>=0.45", "worst<0.6"])["passed"]
    assert not evaluate_gate(report, ["autoattack>=0.55"])["passed"]


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
