import json

import pytest

from robustcompress.cli import main


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("quickstart", "fit", "evaluate", "export", "demo"):
        assert command in out


def test_list_methods(capsys):
    assert main(["fit", "--list-methods"]) == 0
    out = capsys.readouterr().out
    assert "pgd-at" in out and "akd" in out


def test_bad_method_is_a_readable_error_not_a_traceback(capsys):
    assert main(["fit", "digits", "--method", "pgdat", "--out", "unused"]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'pgdat'" in err and "Traceback" not in err


def test_fit_from_config_file_then_evaluate_and_export(tmp_path, capsys):
    config = tmp_path / "fit.yaml"
    config.write_text(
        "data: digits\nstudent: lcnet_050\nmethod: pgd-at\nepochs: 1\nsteps: 1\nbatch_size: 128\n"
        "input_size: 16\nverify_examples: 32\ndevice: cpu\nprogress: false\n"
    )
    bundle = tmp_path / "bundle"
    assert main(["fit", "--config", str(config), "--eps", "8/255", "--out", str(bundle)]) == 0
    saved = json.loads((bundle / "config.json").read_text())
    assert saved["eps"] == pytest.approx(8 / 255)
    assert main(["evaluate", str(bundle), "digits", "--attacks", "fgsm", "--n-examples", "16", "--checks", "quick",
                 "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["n_examples"] == 16 and "fgsm" in report["robust_acc"]
    assert main(["export", str(bundle), "--out", str(tmp_path / "s.onnx")]) == 0
    assert (tmp_path / "s.onnx").is_file()


def test_a_process_ends_with_its_code_its_output_and_its_atexit_handlers(tmp_path):
    # exit_process skips only the interpreter's last garbage collection: what a caller relies on still happens.
    import subprocess
    import sys

    code = ("import atexit, sys\n"
            "atexit.register(lambda: open(sys.argv[1], 'w').write('atexit ran'))\n"
            "print('buffered output', end='')\n"
            "from robustcompress.process_exit import exit_process\n"
            "exit_process(3)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "atexit.txt")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 3 and done.stdout == "buffered output"
    assert (tmp_path / "atexit.txt").read_text() == "atexit ran"
