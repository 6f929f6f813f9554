"""ONNX export: parity with PyTorch, verified metadata, refusal on mismatch, INT8, and the torch-free deploy runtime."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from conftest import CHECKOUT_PYTHONPATH, REPO_ROOT

from robustcompress import RobustCompressor, load_data
from robustcompress.cli import main as cli_main
from robustcompress.export import ParityError, check_parity, read_metadata
from robustcompress.export.onnx import onnx_logits, set_metadata

N_VERIFY = 48

# Runs a module with `import torch` failing, then proves torch never got imported.
NO_TORCH_PRELUDE = """
import importlib.abc, runpy, sys
class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
        return None
sys.meta_path.insert(0, BlockTorch())
try:
    import torch
except ImportError:
    pass
else:
    sys.exit("torch was importable despite the blocker")
module, sys.argv = sys.argv[1], sys.argv[1:]
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
finally:
    assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules), "torch got imported"
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A standard-trained tiny student on 16px digits, saved as a bundle and exported by the CLI with --int8."""
    root = tmp_path_factory.mktemp("export")
    data = load_data("digits", 16)
    rc = RobustCompressor(
        [], "test_byobnet", method="standard", epochs=2, input_size=16, batch_size=32, lr=0.05, augment=False,
        device="cpu", seed=0, verify_attacks=(), progress=False,
    )
    rc.fit(data)
    bundle = rc.save(root / "bundle")
    argv = ["export", str(bundle), "--int8", "--examples", str(N_VERIFY), "--attack-steps", "5",
            "--calibration-examples", "128", "--latency-runs", "5"]
    return SimpleNamespace(rc=rc, data=data, bundle=bundle, argv=argv, code=cli_main(argv),
                           fp32=bundle / "student.onnx", int8=bundle / "student.int8.onnx",
                           report_path=bundle / "student.report.json")


def test_cli_export_writes_verified_fp32_and_int8_with_report(exported: SimpleNamespace) -> None:
    assert exported.code == 0
    report = json.loads(exported.report_path.read_text())
    fp32, int8 = report["fp32"], report["int8"]
    assert Path(fp32["path"]) == exported.fp32 and Path(int8["path"]) == exported.int8
    assert fp32["parity"]["max_abs_diff"] < 1e-4 and fp32["parity"]["argmax_agreement"] == 1.0
    assert fp32["parity_adversarial"]["max_abs_diff"] < 1e-4
    assert fp32["n_examples"] == N_VERIFY and fp32["attack"]["eps"] == pytest.approx(8 / 255)
    assert fp32["clean_acc"] > 0.8  # two epochs on digits
    assert fp32["clean_acc"] == fp32["pytorch_clean_acc"]
    # Same adversarial images and equal logits: onnxruntime and PyTorch agree on robustness too.
    assert fp32["robust_acc"] == fp32["pytorch_robust_acc"] and set(fp32["robust_acc"]) == {"pgd5"}
    assert 0.0 <= fp32["worst_case_acc"] <= min(fp32["clean_acc"], fp32["robust_acc"]["pgd5"])
    # INT8: smaller, and what quantization costs is on record.
    assert int8["size_bytes"] < 0.6 * fp32["size_bytes"]
    assert exported.int8.stat().st_size == int8["size_bytes"]
    assert int8["clean_acc"] > 0.7 and int8["argmax_agreement_with_fp32"] > 0.8
    for key in ("robust_acc", "robust_acc_transfer", "robust_acc_twin"):
        assert 0.0 <= int8[key]["pgd5"] <= 1.0
    assert int8["robust_acc"]["pgd5"] <= min(int8["robust_acc_transfer"]["pgd5"], int8["robust_acc_twin"]["pgd5"])
    assert int8["twin_argmax_agreement_with_int8"] > 0.8  # the fake-quant twin stands for the int8 graph
    assert int8["quantization"]["format"] == "QDQ" and "per output channel" in int8["quantization"]["weights"]
    for section in (fp32, int8):
        assert section["latency_cpu"]["batch1_p50_ms"] > 0
    # One self-contained file each: no external-data side files, every weight stored inside the .onnx.
    written = {p.name for p in exported.bundle.iterdir() if p.name.startswith("student")}
    assert written == {"student.safetensors", "student.onnx", "student.int8.onnx", "student.report.json"}
    for path in (exported.fp32, exported.int8):
        proto = onnx.load(str(path), load_external_data=False)
        assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)


def test_parity_below_tolerance_at_batch_1_and_7(exported: SimpleNamespace) -> None:
    x = exported.data.test.tensors[0][:7]
    for batch in (x[:1], x):
        parity = check_parity(exported.rc.student, exported.fp32, batch)
        assert parity["max_abs_diff"] < 1e-4 and parity["argmax_agreement"] == 1.0
        assert onnx_logits(exported.fp32, batch.numpy()).shape == (len(batch), 10)


def test_metadata_round_trips_and_carries_the_verification(exported: SimpleNamespace) -> None:
    from robustcompress_runtime.runtime import load_model

    rc, report = exported.rc, json.loads(exported.report_path.read_text())
    meta = read_metadata(exported.fp32)
    assert load_model(exported.fp32).metadata == meta  # the torch-free reader decodes the same
    assert meta["class_labels"] == [str(i) for i in range(10)]
    assert meta["input_size"] == 16 and meta["channels"] == 3 and meta["input_range"] == [0.0, 1.0]
    spec = rc.student.spec()
    assert meta["mean"] == pytest.approx(spec["mean"]) and meta["std"] == pytest.approx(spec["std"])
    assert meta["eps"] == pytest.approx(rc.config.eps) and meta["norm"] == "Linf"
    assert meta["method"] == "standard" and meta["teachers"] == [] and meta["student"] == "test_byobnet"
    assert meta["precision"] == "fp32"
    fp32_check = {k: v for k, v in report["fp32"].items() if k not in ("path", "size_bytes", "latency_cpu")}
    assert meta["verification"] == fp32_check
    int8_meta = read_metadata(exported.int8)
    assert int8_meta["precision"] == "int8" and int8_meta["float_verification"] == fp32_check
    assert int8_meta["verification"]["robust_acc"] == report["int8"]["robust_acc"]
    assert int8_meta["class_labels"] == meta["class_labels"] and int8_meta["eps"] == meta["eps"]
    # Arbitrary values survive a set/read cycle, and setting a key again replaces it.
    proto = onnx.load(str(exported.fp32))
    values = {"nested": {"a": [1, 2.5, None], "b": "x"}, "plain": "not json {", "number": 0.125}
    set_metadata(proto, values)
    set_metadata(proto, {"number": 3})
    assert {k: read_metadata(proto)[k] for k in values} == {**values, "number": 3}
    assert [e.key for e in proto.metadata_props].count("number") == 1


def test_both_exporters_give_the_same_logits_and_auto_falls_back_to_dynamo(exported: SimpleNamespace,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import robustcompress.export.onnx as onnx_export

    assert read_metadata(exported.fp32)["exporter"] == "torchscript"  # auto, while torch ships TorchScript
    assert json.loads(exported.report_path.read_text())["versions"]["exporter"] == "torchscript"
    student, batch = exported.rc.student, exported.data.test.tensors[0][:16]
    dynamo = onnx_export.to_onnx(student, 16, exporter="dynamo")
    assert read_metadata(dynamo)["exporter"] == "dynamo"
    assert check_parity(student, dynamo, batch)["max_abs_diff"] < 1e-4
    np.testing.assert_allclose(onnx_logits(dynamo, batch.numpy()), onnx_logits(exported.fp32, batch.numpy()),
                               atol=1e-5)

    def gone(*args, **kwargs):
        raise RuntimeError("TorchScript export was removed")

    dynamo_calls = []
    monkeypatch.setattr(onnx_export, "_torchscript_export", gone)
    monkeypatch.setattr(onnx_export, "_dynamo_export", lambda *a: dynamo_calls.append(a) or onnx.ModelProto())
    assert read_metadata(onnx_export.to_onnx(student, 16))["exporter"] == "dynamo" and len(dynamo_calls) == 1
    with pytest.raises(RuntimeError, match="was removed"):
        onnx_export.to_onnx(student, 16, exporter="torchscript")
    with pytest.raises(ValueError, match="exporter='onnx' is not one of auto, torchscript, dynamo"):
        onnx_export.to_onnx(student, 16, exporter="onnx")


def test_export_refuses_a_graph_that_does_not_match(exported: SimpleNamespace, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import robustcompress.export.verified as verified

    wrong = onnx.load(str(exported.fp32))
    bias = next(t for t in wrong.graph.initializer if t.dims == [10])  # the classifier's bias
    values = onnx.numpy_helper.to_array(bias) + 0.5
    bias.CopyFrom(onnx.numpy_helper.from_array(values.astype(np.float32), bias.name))
    monkeypatch.setattr(verified, "to_onnx", lambda *args, **kwargs: onnx.load_from_string(wrong.SerializeToString()))

    with pytest.raises(ParityError, match="differs from PyTorch by 0.5"):
        exported.rc.export_onnx(tmp_path / "bad.onnx", n_parity=8)
    assert list(tmp_path.iterdir()) == []  # no .onnx, no report, no temp files

    code = cli_main(["export", str(exported.bundle), "--out", str(tmp_path / "cli.onnx"), "--examples", "8"])
    assert code == 2 and "differs from PyTorch" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def _known_image(exported: SimpleNamespace, folder: Path) -> tuple[Path, str]:
    """A held-out digit the exported model gets right with the highest confidence, saved as a 48x48 PNG."""
    x, y = exported.data.test.tensors
    probs = torch.softmax(torch.from_numpy(onnx_logits(exported.fp32, x[:100].numpy())), 1)
    confidence = torch.where(probs.argmax(1) == y[:100], probs.max(1).values, torch.zeros(100))
    i = int(confidence.argmax())
    pixels = (x[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    path = folder / f"digit_{int(y[i])}.png"
    Image.fromarray(pixels).resize((48, 48), Image.Resampling.NEAREST).save(path)  # the runtime resizes back to 16
    return path, str(int(y[i]))


def test_runtime_classifies_an_image_file_without_torch(exported: SimpleNamespace, tmp_path: Path) -> None:
    image, label = _known_image(exported, tmp_path)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": CHECKOUT_PYTHONPATH}
    for model in (exported.fp32, exported.int8):
        run = subprocess.run([sys.executable, "-c", NO_TORCH_PRELUDE, "robustcompress_runtime.runtime", str(model), str(image)],
                             capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
        assert run.returncode == 0, run.stderr
        assert f"{image}: {label} (probability" in run.stdout
        assert "verified on" in run.stdout  # the robustness numbers travel with the file
    bench = subprocess.run(
        [sys.executable, "-c", NO_TORCH_PRELUDE, "robustcompress_runtime.benchmark", str(exported.fp32), "--int8", str(exported.int8),
         "--runs", "3", "--batch-runs", "1", "--batch-size", "8"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60,
    )
    assert bench.returncode == 0, bench.stderr
    assert "skipping the PyTorch eager row" in bench.stderr  # the bundle beside the file needs torch
    assert "| onnxruntime fp32 |" in bench.stdout and "| onnxruntime int8 (QDQ) |" in bench.stdout


@pytest.mark.slow  # pip fetches onnxruntime, numpy and Pillow from the package registry
def test_pip_install_export_on_a_fresh_venv_classifies_without_torch(exported: SimpleNamespace, tmp_path: Path) -> None:
    """The edge box: `pip install ./export` in a new virtualenv installs no torch, and the model classifies there."""
    image, label = _known_image(exported, tmp_path)
    venv = tmp_path / "edge"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    package = shutil.copytree(REPO_ROOT / "export", tmp_path / "export",  # as copied to the box; builds stay there
                              ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    install = subprocess.run([python, "-m", "pip", "install", "-q", str(package)], capture_output=True, text=True,
                             timeout=600)
    assert install.returncode == 0, install.stderr
    installed = subprocess.run([python, "-m", "pip", "list", "--format", "freeze"], capture_output=True, text=True,
                               timeout=60).stdout.lower()
    assert "robustcompress-runtime==" in installed and "torch" not in installed
    run = subprocess.run([python, "-m", "robustcompress_runtime", str(exported.fp32), str(image)], capture_output=True,
                         text=True, cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, timeout=60)
    assert run.returncode == 0, run.stderr
    assert f"{image}: {label} (probability" in run.stdout


def test_runtime_takes_arrays_and_explains_bad_input(exported: SimpleNamespace) -> None:
    from robustcompress_runtime.runtime import classify, load_images, load_model

    model = load_model(exported.fp32)
    x, y = exported.data.test.tensors[0][:5].numpy(), exported.data.test.tensors[1][:5].numpy()
    expected = onnx_logits(exported.fp32, x).argmax(1)
    assert np.array_equal(load_images(x, 16), x)  # an NCHW batch of the right size passes through untouched
    assert [r["index"] for r in classify(model, x)] == expected.tolist()
    hwc_uint8 = [(img.transpose(1, 2, 0) * 255).round().astype(np.uint8) for img in x]
    assert [r["index"] for r in classify(model, hwc_uint8)] == expected.tolist()
    top = classify(model, hwc_uint8[0], top_k=3)[0]["top"]
    assert len(top) == 3 and top[0]["probability"] >= top[1]["probability"] >= top[2]["probability"]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        classify(model, x * 2 - 1)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        classify(model, "no/such/image.png")
    assert (expected == y).mean() > 0.6


@pytest.mark.parametrize("kwargs, words", [({"calibration_examples": -1}, "calibration_examples=-1 is too small"),
                                           ({"n_parity": 0}, "n_parity=0 is too small"),
                                           ({"attack_steps": 0}, "attack_steps=0 is too small"),
                                           ({"latency_runs": -1}, "latency_runs=-1 is too small"),
                                           ({"tolerance": 0.5}, "tolerance=0.5 must be at most 0.01"),
                                           ({"tolerance": 0}, "tolerance=0 must be above 0")])
def test_export_arguments_out_of_range_are_refused_before_any_work(tmp_path, monkeypatch, kwargs, words):
    from robustcompress.distill import initial_student

    rc = RobustCompressor([], "test_resnet", method="standard", progress=False)
    rc.student = initial_student("test_resnet", 10, 8, 3, 0)

    def never(*args, **kwargs):
        raise AssertionError("the export started before its arguments were checked")

    monkeypatch.setattr("robustcompress.export.student.labelled_data", never)
    with pytest.raises(ValueError) as info:
        rc.export_onnx(tmp_path / "s.onnx", "digits", **kwargs)
    assert words in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_cli_export_refuses_a_raised_tolerance(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        cli_main(["export", str(tmp_path / "missing"), "--tolerance", "0.5"])
    assert info.value.code == 2
    assert "argument --tolerance: 0.5 must be at most 0.01" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"this is not a model", b"", b"\x08\x07" + bytes(range(256)) * 4])
def test_a_garbage_onnx_file_is_one_line_naming_the_file_everywhere(exported: SimpleNamespace, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture, content: bytes) -> None:
    from robustcompress.export.classifier import OnnxClassifier
    from robustcompress_runtime.runtime import main as runtime_main

    garbage = tmp_path / "student.onnx"
    garbage.write_bytes(content)
    assert cli_main(["evaluate", str(garbage), "digits", "--attacks", "fgsm", "--n-examples", "8"]) == 2
    assert cli_main(["evaluate", str(garbage), "digits", "--bundle", str(exported.bundle), "--n-examples", "8"]) == 2
    image = tmp_path / "digit.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(image)
    assert runtime_main([str(garbage), str(image)]) == 2
    for line in capsys.readouterr().err.strip().splitlines():
        assert str(garbage) in line and "not a readable ONNX model" in line and "unexpected" not in line, line
    for load in (lambda: OnnxClassifier(garbage), lambda: read_metadata(garbage)):  # what evaluate and the demo use
        with pytest.raises(ValueError, match="not a readable ONNX model") as exc:
            load()
        assert str(garbage) in str(exc.value) and "\n" not in str(exc.value)


def test_evaluate_judges_the_int8_export_with_the_tolerance_its_export_recorded(exported: SimpleNamespace,
                                                                               tmp_path: Path,
                                                                               capsys: pytest.CaptureFixture) -> None:
    """The deployed INT8 file is evaluable: its logits are not the fp32 twin's to 1e-4, and need not be."""
    recorded = read_metadata(exported.int8)["verification"]["max_abs_logit_diff_vs_fp32"]
    assert recorded > 1e-3  # INT8 rounding moves logits far beyond the fp32 parity tolerance
    report = tmp_path / "int8.json"
    argv = ["evaluate", str(exported.int8), "digits", "--attacks", "fgsm", "--n-examples", "32", "--checks", "none",
            "--json", str(report)]
    assert cli_main(argv) == 0, capsys.readouterr().err
    err = capsys.readouterr().err
    assert "INT8" in err and "recorded" in err and "transfer" in err and "Report this" not in err
    model = json.loads(report.read_text())["model"]
    assert model["source"] == "onnx" and "INT8" in model["attacked_via"]
    assert model["twin_max_abs_logit_diff"] <= model["twin_parity_tolerance"]
    assert model["twin_parity_tolerance"] > recorded


def test_evaluate_refuses_an_int8_file_beyond_its_recorded_tolerance_in_one_line(exported: SimpleNamespace,
                                                                                 tmp_path: Path,
                                                                                 capsys: pytest.CaptureFixture) -> None:
    int8 = onnx.load(str(exported.int8))
    meta = read_metadata(int8)
    meta["verification"]["max_abs_logit_diff_vs_fp32"] = 1e-6  # a record this file cannot meet
    fake = tmp_path / "student.int8.onnx"
    onnx.save(set_metadata(int8, {"verification": meta["verification"]}), str(fake))
    argv = ["evaluate", str(fake), "digits", "--bundle", str(exported.bundle), "--attacks", "fgsm", "--n-examples", "8"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(fake) in err and "--bundle" in err
    assert "Report this" not in err and "was not written" not in err


# -- export --out given a folder ----------------------------------------------------------------------------------------
def test_cli_export_into_an_existing_folder_writes_student_onnx_there(tiny_bundle, tmp_path, capsys):
    folder = tmp_path / "exports"
    folder.mkdir()
    argv = ["export", str(tiny_bundle), "--out", str(folder), "--data", "digits", "--examples", "8",
            "--attack-steps", "1", "--latency-runs", "0"]
    assert cli_main(argv) == 0, capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["student.onnx", "student.report.json"]
    assert str(folder / "student.onnx") in capsys.readouterr().out


def test_onnx_output_path_rule(tmp_path):
    from robustcompress.export.student import onnx_output_path

    assert onnx_output_path(tmp_path) == tmp_path / "student.onnx"
    assert onnx_output_path(f"{tmp_path}/new/") == tmp_path / "new" / "student.onnx"
    assert onnx_output_path(tmp_path / "m.onnx") == tmp_path / "m.onnx"
