"""The deploy runtime (export/robustcompress_runtime) on bad input: one line for any error, foreign ONNX files and
decompression bombs explained."""
from __future__ import annotations

import pytest
from conftest import foreign_onnx, one_line, png_claiming

from robustcompress import RobustCompressor
from robustcompress_runtime import runtime

pytestmark = pytest.mark.usefixtures("one_thread")


def test_runtime_prints_one_line_for_any_exception(tmp_path, monkeypatch, capsys):
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


@pytest.fixture(scope="module")
def exported_onnx(tiny_bundle, tmp_path_factory):
    path = tmp_path_factory.mktemp("poor_onnx") / "student.onnx"
    RobustCompressor.load(tiny_bundle, device="cpu").export_onnx(path, "digits", n_parity=8, attack_steps=1,
                                                                 latency_runs=0)
    return path


def test_runtime_explains_a_foreign_nhwc_onnx(tmp_path, capsys):
    """Not 'the model takes 8-channel images': the deploy runtime names the layout it cannot feed."""
    path = foreign_onnx(tmp_path / "nhwc.onnx", "nhwc")
    picture = tmp_path / "p.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(picture)
    assert runtime.main([str(path), str(picture)]) != 0
    line = one_line(capsys.readouterr().err)
    assert "nhwc.onnx takes x: tensor(float) ['n', 8, 8, 3]" in line and "channels-last (NHWC)" in line


@pytest.mark.parametrize("side, words", [(7000, "49 megapixels"), (20000, "far too large to decode safely")])
def test_runtime_cli_refuses_a_decompression_bomb(exported_onnx, tmp_path, capsys, side, words):
    bomb = png_claiming(tmp_path / "bomb.png", side, side)
    assert runtime.main([str(exported_onnx), str(bomb)]) == 2
    line = one_line(capsys.readouterr().err)
    assert words in line and "bomb.png" in line
