"""Output folders: a read-only --out is refused before any work, and the writability check leaves nothing behind."""
from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TINY_FIT, never, one_line

from robustcompress import RobustCompressor
from robustcompress.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


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
    monkeypatch.setattr("robustcompress.compressor.load_train_data", never("data loading"))
    rc = RobustCompressor([], "test_efficientnet", method="pgd-at", out_dir=read_only / "run", verify_attacks=(),
                          **TINY_FIT)
    with pytest.raises(ValueError, match=r"output folder .*run is not writable \(.*\); pass a folder you can write"):
        rc.fit("digits")


def test_cli_fit_refuses_a_read_only_out(read_only, monkeypatch, capsys):
    monkeypatch.setattr("robustcompress.compressor.load_train_data", never("data loading"))
    assert main(["fit", "digits", "--method", "pgd-at", "--out", str(read_only / "run")]) == 2
    assert "is not writable" in one_line(capsys.readouterr().err)


@pytest.mark.parametrize("flag, words", [("--out", "--out folder"), ("--json", "--json folder")])
def test_cli_evaluate_refuses_a_read_only_out_before_loading(read_only, monkeypatch, capsys, flag, words):
    monkeypatch.setattr("robustcompress.data.load_data", never("data loading"))
    target = read_only / ("report" if flag == "--out" else "r.json")
    assert main(["evaluate", "runs/x", "digits", flag, str(target)]) == 2
    line = one_line(capsys.readouterr().err)
    assert words in line and "is not writable" in line


def test_cli_export_refuses_a_read_only_out_before_verifying(tiny_bundle, read_only, monkeypatch, capsys):
    monkeypatch.setattr("robustcompress.export.student.export_verified", never("export verification"))
    assert main(["export", str(tiny_bundle), "--out", str(read_only / "student.onnx")]) == 2
    line = one_line(capsys.readouterr().err)
    assert "export folder" in line and "is not writable" in line


def test_check_writable_leaves_nothing_behind(tmp_path):
    from robustcompress.io import check_writable

    check_writable(tmp_path / "a" / "b")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        check_writable(tmp_path / "file" / "sub")
