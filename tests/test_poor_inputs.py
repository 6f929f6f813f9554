"""Issue 13's remaining "poor ones": each now gets a clear one-line error (type + key words) before any work is done,
and nothing is written.

Labels out of range or unseen in training, RGBA / NCHW / non-square arrays in an .npz, messages that advise flags
the CLI lacks, negative teacher weights, a read-only --out (fit, evaluate, export), export --out given a folder, a
foreign ONNX in evaluate and the demo, and decompression-bomb pictures in the deploy runtime and the demo.
"""
from __future__ import annotations

import argparse
import ast
import importlib
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.utils.data import TensorDataset

from robustcompress import RobustCompressor
from robustcompress.cli import build_parser, main
from robustcompress.data import load_data
from robustcompress.verify import evaluate

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(epochs=1, steps=1, batch_size=64, lr=0.05, input_size=8, device="cpu", progress=False)



@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory, digits8):
    """A bundle with one standard teacher (the demo needs an undefended model), trained in seconds at 8x8."""
    train, test = digits8
    out = tmp_path_factory.mktemp("poor") / "bundle"
    rc = RobustCompressor(["test_resnet"], "test_efficientnet", method="ard", teacher_epochs=1, out_dir=out,
                          verify_attacks=(), **TINY)
    rc.fit(train, val_data=test)
    rc._data = None  # as if loaded from disk: exports reload 'digits' by name
    return out


@pytest.fixture(scope="module")
def exported_onnx(tiny_bundle, tmp_path_factory):
    path = tmp_path_factory.mktemp("poor_onnx") / "student.onnx"
    RobustCompressor.load(tiny_bundle, device="cpu").export_onnx(path, "digits", n_parity=8, attack_steps=1,
                                                                 latency_runs=0)
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _never(what: str):
    def fail(*args, **kwargs):
        raise AssertionError(f"{what} ran although the input was already known to be bad")

    return fail


# -- labels out of range or unseen in training: refused before training --------------------------------------------
def _npz(path: Path, **arrays) -> Path:
    images = np.random.default_rng(0).integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)
    base = dict(x_train=images, y_train=np.arange(8) % 4, x_test=images, y_test=np.arange(8) % 4)
    np.savez(path, **{**base, **arrays})
    return path


def test_npz_test_labels_unseen_in_training_are_refused(tmp_path):
    path = _npz(tmp_path / "d.npz", y_test=np.array([0, 1, 2, 3, 5, 4, 0, 1]))
    with pytest.raises(ValueError, match=r"y_test include classes that never occur in the y_train: 4, 5"):
        load_data(str(path))


def test_npz_labels_beyond_its_class_names_are_refused(tmp_path):
    path = _npz(tmp_path / "d.npz", classes=np.array(["a", "b", "c"]))
    with pytest.raises(ValueError, match=r"labels go up to 3 but 'classes' names only 3 classes"):
        load_data(str(path))


@pytest.mark.parametrize("shift, words", [(12, "val_data labels go up to 12 but the model has 10 classes"),
                                          (None, "val_data labels include classes that never occur in the "
                                                 "train_data labels: 4")])
def test_dataset_val_labels_are_checked_before_teachers_or_training(digits8, tmp_path, monkeypatch, shift, words):
    train, test = digits8
    x, y = test.tensors
    bad_y = y.clone()
    if shift is None:  # train without class 4, validate on all ten
        keep = train.tensors[1] != 4
        train = TensorDataset(train.tensors[0][keep], train.tensors[1][keep])
    else:
        bad_y[3] = shift
    monkeypatch.setattr("robustcompress.compressor.prepare_teachers", _never("teacher preparation"))
    monkeypatch.setattr("robustcompress.compressor.train_student", _never("training"))
    rc = RobustCompressor([], "test_efficientnet", method="pgd-at", out_dir=tmp_path / "out", verify_attacks=(), **TINY)
    with pytest.raises(ValueError) as info:
        rc.fit(train, val_data=TensorDataset(x, bad_y))
    assert words in str(info.value)
    assert not (tmp_path / "out").exists()


def test_named_data_with_a_val_dataset_is_checked_too(digits8, tmp_path, monkeypatch):
    _, test = digits8
    x, y = test.tensors
    monkeypatch.setattr("robustcompress.compressor.prepare_teachers", _never("teacher preparation"))
    rc = RobustCompressor([], "test_efficientnet", method="pgd-at", out_dir=tmp_path / "out", verify_attacks=(), **TINY)
    with pytest.raises(ValueError, match="val_data labels go up to 10 but the model has 10 classes"):
        rc.fit("digits", val_data=TensorDataset(x, torch.where(y == 0, 10, y)))
    assert not (tmp_path / "out").exists()


def test_evaluation_labels_the_model_cannot_output_are_refused_before_attacks(monkeypatch):
    calls = []

    class TenClasses(nn.Module):
        def forward(self, x):
            calls.append(len(x))
            return torch.zeros(len(x), 10) + 0 * x.sum()

    x, y = torch.rand(6, 3, 8, 8), torch.tensor([0, 1, 2, 12, 3, 4])
    with pytest.raises(ValueError, match=r"evaluation labels go up to 12 but the model predicts 10 classes"):
        evaluate(TenClasses(), (x, y), attacks=("pgd20",))
    assert calls == [1]  # one probe image, no attack


def test_cli_fit_on_an_npz_with_unseen_test_labels_is_one_line(tmp_path, capsys):
    path = _npz(tmp_path / "d.npz", y_test=np.array([0, 1, 2, 3, 7, 0, 1, 2]))
    assert main(["fit", str(path), "--method", "pgd-at", "--out", str(tmp_path / "out")]) == 2
    assert "never occur in the y_train: 7" in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


# -- NCHW arrays in an .npz and non-square Datasets --------------------------------------------------------------------
@pytest.mark.parametrize("shape, words", [
    ((8, 3, 8, 8), "looks channels-first (N, C, H, W)"),
    ((8, 1, 8, 8), "np.transpose(x_train, (0, 2, 3, 1))"),
    ((8, 8, 8, 2), "x_train has 2 channels"),
])
def test_npz_layouts_it_would_misread_are_refused(tmp_path, shape, words):
    x = np.zeros(shape, dtype=np.uint8)
    path = _npz(tmp_path / "d.npz", x_train=x)
    with pytest.raises(ValueError) as info:
        load_data(str(path))
    assert words in str(info.value)


def test_a_non_square_torch_dataset_is_refused():
    """A Dataset is used as it is, not resampled (an image folder or .npz is centre-cropped by the picture rule)."""
    with pytest.raises(ValueError, match="must be square"):
        load_data(TensorDataset(torch.zeros(4, 3, 8, 12), torch.zeros(4, dtype=torch.long)))


def test_good_npz_layouts_still_load(tmp_path):
    grey = np.zeros((8, 8, 8), np.uint8)
    for x in (np.zeros((8, 8, 8, 3), np.uint8), grey, grey[..., None]):
        data = load_data(str(_npz(tmp_path / "d.npz", x_train=x, x_test=x)))
        assert data.train.tensors[0].shape == (8, 3, 8, 8) and data.num_classes == 4


def test_sixteen_bit_npz_is_rescaled_like_sixteen_bit_pictures(tmp_path):
    """uint16 means 0..65535, as for a 16-bit PNG: the same pixels as the 8-bit array, not a range error."""
    from robustcompress.data.tensors import as_float_images

    eight = np.random.default_rng(1).integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)
    sixteen = eight.astype(np.uint16) * 257  # 255 * 257 = 65535
    a = load_data(str(_npz(tmp_path / "a.npz", x_train=eight, x_test=eight)))
    b = load_data(str(_npz(tmp_path / "b.npz", x_train=sixteen, x_test=sixteen)))
    xa, xb = as_float_images(a.train.tensors[0]), as_float_images(b.train.tensors[0])
    assert torch.allclose(xa, xb, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_wide_integer_npz_images_say_which_dtype_to_save(tmp_path, dtype):
    x = np.zeros((8, 8, 8, 3), dtype)
    with pytest.raises(ValueError, match=f"x_train has dtype {np.dtype(dtype).name}; save 8-bit images as uint8"):
        load_data(str(_npz(tmp_path / "d.npz", x_train=x)))


# -- messages name only flags that exist ----------------------------------------------------------------------------
FOREIGN_FLAGS = {"--nproc_per_node"}  # torchrun's, named in fit --speed's help
SOURCES = ("robustcompress", "robustcompress_runtime", "apps")


def _runtime():
    """The deploy runtime module (robustcompress_runtime.runtime, whose main() is the torch-free CLI)."""
    return importlib.import_module("robustcompress_runtime.runtime")


def _options(parser: argparse.ArgumentParser) -> set[str]:
    flags = set()
    for action in parser._actions:
        flags.update(o for o in action.option_strings if o.startswith("--"))
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags |= _options(sub)
    return flags


def _runtime_parser(monkeypatch) -> argparse.ArgumentParser:
    """The parser the runtime's main() builds, caught as it parses."""
    caught = []

    class Caught(Exception):
        pass

    def grab(self, *args, **kwargs):
        caught.append(self)
        raise Caught

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", grab)
    with pytest.raises(Caught):
        _runtime().main(["model.onnx", "x.png"])
    monkeypatch.undo()
    return caught[0]


def _trees():
    for package in SOURCES:
        for file in sorted((ROOT / package).rglob("*.py")) if (ROOT / package).is_dir() else []:
            yield file, ast.parse(file.read_text())


def _defined_flags() -> set[str]:
    """Flags of the shipped tools' other parsers (e.g. the latency benchmark): add_argument("--x", ...) calls."""
    return {arg.value for _, tree in _trees() for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument"
            for arg in node.args if isinstance(arg, ast.Constant) and str(arg.value).startswith("--")}


def _flags_in_strings() -> dict[str, list[str]]:
    """Every --flag written in a string (messages, help, f-string parts) of the shipped code, docstrings aside."""
    found: dict[str, list[str]] = {}
    for file, tree in _trees():
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                      and node.body and isinstance(node.body[0], ast.Expr)
                      and isinstance(node.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*[a-z0-9]", node.value):
                    found.setdefault(flag, []).append(f"{file.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_flag_named_in_a_message_exists(monkeypatch):
    known = _options(build_parser()) | _options(_runtime_parser(monkeypatch)) | _defined_flags() | FOREIGN_FLAGS
    found = _flags_in_strings()
    assert "--resume" in found and "--teachers" in found  # the scan sees messages
    missing = {flag: where for flag, where in found.items() if flag not in known}
    assert not missing, f"messages name flags no parser has: {missing}"


def test_cifar10_missing_advises_only_what_exists(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ROBUSTCOMPRESS_DATA", str(tmp_path / "empty"))
    assert main(["fit", "cifar10", "--method", "pgd-at", "--out", str(tmp_path / "out")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "cifar10 not found under" in line and "ROBUSTCOMPRESS_DATA" in line and "download=True" in line
    assert "data_root=<" not in line and "--" not in line
    assert not (tmp_path / "out").exists()


def test_a_teacherless_distillation_names_the_cli_flags(tmp_path, capsys):
    assert main(["fit", "digits", "--method", "ard", "--out", str(tmp_path / "out")]) == 2
    assert "--teachers NAME ... or --method pgd-at" in _one_line(capsys.readouterr().err)


# -- teacher weights --------------------------------------------------------------------------------------------------
def test_cli_negative_teacher_weight_is_refused_by_argparse(tmp_path, capsys):
    argv = ["fit", "digits", "--method", "ard", "--teachers", "test_resnet", "test_resnet", "--teacher-weights", "-1",
            "2", "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "argument --teacher-weights: -1 must be a finite number of at least 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("weights, words", [("[-1, 2]", "teacher_weights[0]=-1 must be at least 0"),
                                            ("[1, .nan]", "teacher_weights[1] must be a finite number"),
                                            ("'1, 2'", "teacher_weights must be a list of numbers")])
def test_config_teacher_weights_are_validated(tmp_path, capsys, weights, words):
    config = tmp_path / "run.yaml"
    config.write_text(f"data: digits\nmethod: ard\nteachers: [test_resnet, test_resnet]\nteacher_weights: {weights}\n")
    assert main(["fit", "--config", str(config), "--out", str(tmp_path / "out")]) == 2
    assert words in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_cli_teacher_weights_reach_the_compressor(tmp_path, monkeypatch):
    seen = []

    def record(self, *args, **kwargs):
        seen.append(self.teacher_weights.tolist())
        raise KeyboardInterrupt

    monkeypatch.setattr(RobustCompressor, "fit", record)
    argv = ["fit", "digits", "--method", "ard", "--teachers", "test_resnet", "test_resnet", "--teacher-weights", "3",
            "1", "--out", str(tmp_path / "out")]
    assert main(argv) == 130
    assert seen == [[0.75, 0.25]]


# -- a read-only --out is refused before any work -----------------------------------------------------------------------
@pytest.fixture
def read_only(tmp_path):
    """A folder this process cannot write to (root ignores chmod, so then a sysfs path, else skip)."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except OSError:
        yield folder
        folder.chmod(0o755)
        return
    (folder / "probe").unlink()
    folder.chmod(0o755)
    sysfs = Path("/sys/robustcompress-read-only-test")
    try:
        sysfs.mkdir()
    except OSError:
        yield sysfs
        return
    sysfs.rmdir()
    pytest.skip("no read-only folder available to this user")


def test_fit_refuses_a_read_only_out_before_loading_data(read_only, monkeypatch):
    monkeypatch.setattr("robustcompress.compressor.load_train_data", _never("data loading"))
    rc = RobustCompressor([], "test_efficientnet", method="pgd-at", out_dir=read_only / "run", verify_attacks=(),
                          **TINY)
    with pytest.raises(ValueError, match=r"output folder .*run is not writable \(.*\); pass a folder you can write"):
        rc.fit("digits")


def test_cli_fit_refuses_a_read_only_out(read_only, monkeypatch, capsys):
    monkeypatch.setattr("robustcompress.compressor.load_train_data", _never("data loading"))
    assert main(["fit", "digits", "--method", "pgd-at", "--out", str(read_only / "run")]) == 2
    assert "is not writable" in _one_line(capsys.readouterr().err)


@pytest.mark.parametrize("flag, words", [("--out", "--out folder"), ("--json", "--json folder")])
def test_cli_evaluate_refuses_a_read_only_out_before_loading(read_only, monkeypatch, capsys, flag, words):
    monkeypatch.setattr("robustcompress.data.load_data", _never("data loading"))
    target = read_only / ("report" if flag == "--out" else "r.json")
    assert main(["evaluate", "runs/x", "digits", flag, str(target)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert words in line and "is not writable" in line


def test_cli_export_refuses_a_read_only_out_before_verifying(tiny_bundle, read_only, monkeypatch, capsys):
    monkeypatch.setattr("robustcompress.export.student.export_verified", _never("export verification"))
    assert main(["export", str(tiny_bundle), "--out", str(read_only / "student.onnx")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "export folder" in line and "is not writable" in line


def test_check_writable_leaves_nothing_behind(tmp_path):
    from robustcompress.io import check_writable

    check_writable(tmp_path / "a" / "b")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        check_writable(tmp_path / "file" / "sub")


# -- export --out given a folder ----------------------------------------------------------------------------------------
def test_cli_export_into_an_existing_folder_writes_student_onnx_there(tiny_bundle, tmp_path, capsys):
    folder = tmp_path / "exports"
    folder.mkdir()
    argv = ["export", str(tiny_bundle), "--out", str(folder), "--data", "digits", "--examples", "8",
            "--attack-steps", "1", "--latency-runs", "0"]
    assert main(argv) == 0, capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == ["student.onnx", "student.report.json"]
    assert str(folder / "student.onnx") in capsys.readouterr().out


def test_onnx_output_path_rule(tmp_path):
    from robustcompress.export.student import onnx_output_path

    assert onnx_output_path(tmp_path) == tmp_path / "student.onnx"
    assert onnx_output_path(f"{tmp_path}/new/") == tmp_path / "new" / "student.onnx"
    assert onnx_output_path(tmp_path / "m.onnx") == tmp_path / "m.onnx"


# -- a foreign ONNX (no robustcompress metadata) ------------------------------------------------------------------------
class _NHWC(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(3, 10)

    def forward(self, x):
        return self.head(x.mean((1, 2)))


@pytest.fixture(autouse=True)
def _quiet_legacy_exporter(request):
    """The foreign files are written with torch's legacy exporter, as most files found in the wild were."""
    request.applymarker(pytest.mark.filterwarnings("ignore::DeprecationWarning"))


def _foreign(path: Path, layout: str) -> Path:
    """An ONNX written by plain torch.onnx.export: no metadata; NHWC (dynamic batch) or NCHW fixed to batch 1."""
    if layout == "nhwc":
        model, example, axes = _NHWC().eval(), torch.rand(1, 8, 8, 3), {"x": {0: "n"}}
    else:
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10)).eval()
        example, axes = torch.rand(1, 3, 8, 8), None
    torch.onnx.export(model, example, str(path), input_names=["x"], dynamic_axes=axes, dynamo=False)
    return path


def test_cli_evaluate_explains_a_foreign_onnx_it_cannot_feed(tmp_path, capsys):
    path = _foreign(tmp_path / "nhwc.onnx", "nhwc")
    assert main(["evaluate", str(path), "digits", "--out", str(tmp_path / "rep")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "nhwc.onnx takes x: tensor(float) ['n', 8, 8, 3]" in line
    assert "channels-last (NHWC)" in line and "'robustcompress export'" in line
    assert not (tmp_path / "rep").exists()


def test_cli_evaluate_runs_a_compatible_foreign_onnx_with_a_note(tmp_path, capsys):
    path = _foreign(tmp_path / "fixed.onnx", "nchw")  # fixed batch 1 at 8x8: digits are loaded at 8x8 for it
    argv = ["evaluate", str(path), "digits", "--attacks", "square5", "--n-examples", "4", "--checks", "none",
            "--no-progress", "--json", str(tmp_path / "r.json")]
    assert main(argv) == 0
    assert "note: fixed.onnx has no robustcompress metadata" in capsys.readouterr().err
    import json

    report = json.loads((tmp_path / "r.json").read_text())
    assert "no robustcompress metadata" in report["model"]["note"]


def test_runtime_explains_a_foreign_nhwc_onnx(tmp_path, capsys):
    """Not 'the model takes 8-channel images': the deploy runtime names the layout it cannot feed."""
    path = _foreign(tmp_path / "nhwc.onnx", "nhwc")
    picture = tmp_path / "p.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(picture)
    assert _runtime().main([str(path), str(picture)]) != 0
    line = _one_line(capsys.readouterr().err)
    assert "nhwc.onnx takes x: tensor(float) ['n', 8, 8, 3]" in line and "channels-last (NHWC)" in line


def test_demo_refuses_a_foreign_onnx(tiny_bundle, tmp_path, capsys):
    pytest.importorskip("gradio")
    path = _foreign(tmp_path / "fixed.onnx", "nchw")
    assert main(["demo", str(tiny_bundle), "--onnx", str(path), "--port", "7999"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "has no robustcompress metadata" in line and f"robustcompress export {tiny_bundle}" in line


# -- decompression bombs ------------------------------------------------------------------------------------------------
def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height (a few hundred bytes: only a decoder would find out)."""
    from PIL import Image

    Image.new("L", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)  # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("side, words", [(7000, "49 megapixels"), (20000, "far too large to decode safely")])
def test_runtime_cli_refuses_a_decompression_bomb(exported_onnx, tmp_path, capsys, side, words):
    bomb = _png_claiming(tmp_path / "bomb.png", side, side)
    assert _runtime().main([str(exported_onnx), str(bomb)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert words in line and "bomb.png" in line


def test_demo_refuses_a_decompression_bomb_before_decoding(tmp_path, monkeypatch):
    gr = pytest.importorskip("gradio")
    from gradio.data_classes import ImageData

    from robustcompress.apps.demo import PictureInput
    from robustcompress.apps.handler import image_to_tensor

    bomb = _png_claiming(tmp_path / "bomb.png", 7000, 7000)
    component = PictureInput(type="pil", image_mode=None, format="png")
    monkeypatch.setattr(gr.Image, "preprocess", _never("decoding"))
    with pytest.raises(gr.Error, match="bomb.png is 7000x7000 pixels \\(49 megapixels\\); at most 36"):
        component.preprocess(ImageData(path=str(bomb), orig_name="bomb.png"))
    with pytest.raises(ValueError, match="49 megapixels"):
        image_to_tensor(str(bomb), 16)
