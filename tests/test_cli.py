import argparse
import ast
import importlib
import json
import re

import pytest
from conftest import REPO_ROOT, one_line

from robustcompress import RobustCompressor
from robustcompress.cli import build_parser, main


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


# -- fit's output folder and config files (issue 29) -----------------------------------------------------------------
TINY_FIT = "student: test_resnet\nmethod: pgd-at\nepochs: 1\nsteps: 1\ninput_size: 8\ndevice: cpu\nprogress: false\n" \
           "verify_attacks: []\n"


def _tiny_config(tmp_path, extra=""):
    config = tmp_path / "fit.yaml"
    config.write_text(TINY_FIT + extra)
    return str(config)


def test_fit_takes_out_dir_from_the_config_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "digits", "--config", _tiny_config(tmp_path, "out_dir: from_config\n")]) == 0
    assert (tmp_path / "from_config" / "config.json").is_file() and not (tmp_path / "runs").exists()
    assert "bundle saved to from_config" in capsys.readouterr().out


@pytest.mark.parametrize("line, words", [
    ("out: elsewhere", "unknown key 'out'; did you mean 'out_dir'?"),
    ("epoch: 3", "unknown key 'epoch'; did you mean 'epochs'?"),
    ("resume: 1", "'resume' in"),
])
def test_fit_refuses_an_unknown_config_key_naming_it(tmp_path, monkeypatch, capsys, line, words):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "digits", "--config", _tiny_config(tmp_path, line + "\n")]) == 2
    err = capsys.readouterr().err
    assert words in err and "unexpected" not in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.yaml"]


def test_every_argument_of_the_api_works_in_a_config_file(tmp_path, monkeypatch):
    """Each RobustCompressor argument (the models and every CompressConfig field) and fit's own set in the file
    reaches the compressor as written."""
    from dataclasses import fields

    import yaml

    from robustcompress import CompressConfig, RobustCompressor

    models = dict(teachers=["test_resnet"], student="test_efficientnet")
    settings = dict(
        method="akd", eps="4/255", step_size="1/255",
        steps=2, epochs=3, batch_size=32, lr=0.05, momentum=0.8, weight_decay=0.001, schedule="step", augment=False,
        device="cpu", seed=3, num_classes=10, input_size=8, teacher_weights=[1.0], teacher_epochs=2,
        teacher_finetune_epochs=1, method_kwargs={"alpha": 0.5}, out_dir=str(tmp_path / "out"),
        verify_attacks=["fgsm"], verify_examples=16, progress=False, speed="fast", precision="fp32",
        teacher_outputs="live", select="best-robust", val_size=100)
    assert set(settings) == {f.name for f in fields(CompressConfig)}  # a new setting needs a line here
    config = tmp_path / "all.yaml"
    config.write_text(yaml.safe_dump({"data": "digits", "overwrite": True, **models, **settings}))
    seen = {}

    def recording_fit(self, data, **kwargs):
        seen["fit"] = (self, data, kwargs)
        return self

    monkeypatch.setattr(RobustCompressor, "fit", recording_fit)
    assert main(["fit", "--config", str(config)]) == 0
    rc, data, kwargs = seen["fit"]
    assert rc.config == CompressConfig(**settings) and rc.config.eps == 4 / 255 and rc.config.step_size == 1 / 255
    assert (rc.teacher_specs, rc.student_spec) == (models["teachers"], models["student"])
    assert (data, kwargs) == ("digits", {"resume": False, "force": False, "overwrite": True})


def _fit_flags():
    """The fit command's options: flag -> argparse action."""
    import argparse

    from robustcompress.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {flag: action for action in sub.choices["fit"]._actions for flag in action.option_strings}


def test_every_setting_is_a_fit_flag_derived_from_its_field():
    from dataclasses import fields

    from robustcompress import CompressConfig

    flags = _fit_flags()
    by_setting = {action.dest: action for action in flags.values()}
    for setting in fields(CompressConfig):  # no setting is API-only: each has a flag with its field's help text
        assert setting.name in by_setting, setting.name
        assert by_setting[setting.name].help == setting.metadata["help"], setting.name
    assert {"--eps", "--out", "--finetune-teachers", "--method-arg", "--no-augment", "--no-progress"} <= set(flags)


def test_fit_flags_reach_the_settings_and_override_the_config_file(tmp_path, monkeypatch):
    from robustcompress import RobustCompressor

    seen = {}
    monkeypatch.setattr(RobustCompressor, "fit", lambda self, data, **kwargs: seen.setdefault("rc", self))
    config = _tiny_config(tmp_path, "method_kwargs: {alpha: 0.9, temperature: 2.0}\n")
    assert main(["fit", "digits", "--config", config, "--method", "ard", "--teachers", "test_resnet",
                 "--eps", "4/255", "--no-augment", "--select", "best-robust", "--val-size", "0.1",
                 "--method-arg", "alpha=0.5", "--verify-attacks", "fgsm", "pgd10", "--teacher-weights", "2"]) == 0
    settings = seen["rc"].config
    assert (settings.eps, settings.augment, settings.select, settings.val_size) == (4 / 255, False, "best_robust", 0.1)
    assert settings.method_kwargs == {"alpha": 0.5, "temperature": 2.0} and settings.verify_attacks == ("fgsm", "pgd10")
    assert settings.teacher_weights == (2.0,) and settings.progress is False and settings.out_dir == "runs/fit"


@pytest.mark.parametrize("flags, words", [
    (["--epochs", "0"], "epochs=0 is too small"),
    (["--steps", "-1"], "steps=-1 is too small"),
    (["--batch-size", "0"], "batch_size=0 is too small"),
    (["--lr", "-0.1"], "lr=-0.1 must be above 0"),
    (["--eps", "8"], "did you mean 8/255"),
    (["--select", "best-robust", "--val-size", "0"], "val_size=0 is too small"),
])
def test_a_bad_fit_flag_fails_in_one_line_naming_the_setting_before_any_work(tmp_path, monkeypatch, capsys, flags,
                                                                             words):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "digits", "--method", "pgd-at", *flags]) == 2  # checked by CompressConfig, as the API's
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("line, words", [
    ("select: best-robust\nval_size: 0", "val_size=0 is too small"),
    ("eps: 8", "eps 8 is outside [0, 1]"),
    ("verify_attacks: [pgd2o]", "unknown attack 'pgd2o'"),
    ("method: akd", "method 'akd' distils from teachers"),
])
def test_a_bad_setting_in_a_config_file_fails_in_one_line_before_any_work(tmp_path, monkeypatch, capsys, line,
                                                                          words):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "digits", "--config", _tiny_config(tmp_path, line + "\n")]) == 2
    err = capsys.readouterr().err
    assert words in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit.yaml"]  # no output folder, no data, no teacher


def test_fit_resume_never_replaces_a_finished_bundle_without_overwrite(tmp_path, capsys):
    import shutil

    out = tmp_path / "run"
    config = _tiny_config(tmp_path)
    assert main(["fit", "digits", "--config", config, "--out", str(out)]) == 0
    shutil.rmtree(out / "checkpoints")
    (out / "student.onnx").write_text("its export")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main(["fit", "digits", "--config", config, "--out", str(out), "--resume", "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert "holds the outputs of an earlier run" in err and "no checkpoint to resume from" in err
    assert "--overwrite" in err and "starting from scratch" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main(["fit", "digits", "--config", config, "--out", str(out), "--seed", "1", "--overwrite"]) == 0
    assert json.loads((out / "config.json").read_text())["train_config"]["seed"] == 1
    assert not (out / "student.onnx").exists()


def test_a_second_fit_into_the_same_out_stops_at_once_naming_the_first(tmp_path, monkeypatch, capsys):
    import socket
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom robustcompress.output_folder import folder_lock\n"
         "with folder_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(120)\n",
         str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"

        def never(*args, **kwargs):
            raise AssertionError("the data was loaded although the folder is in use")

        monkeypatch.setattr("robustcompress.compressor.load_train_data", never)
        assert main(["fit", "digits", "--config", _tiny_config(tmp_path), "--out", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err.strip()
        assert f"in use by another robustcompress run (PID {holder.pid} on host {socket.gethostname()}" in err
        assert len(err.splitlines()) == 1
    finally:
        holder.kill()
        holder.wait()
    monkeypatch.undo()
    assert main(["fit", "digits", "--config", _tiny_config(tmp_path), "--out", str(tmp_path / "run")]) == 0


def test_cli_force_needs_resume(tmp_path, capsys):
    assert main(["fit", "digits", "--force", "--out", str(tmp_path / "out")]) == 2
    assert "--force only applies to --resume" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


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


# -- messages name only flags that exist ----------------------------------------------------------------------------
FOREIGN_FLAGS = {"--nproc_per_node"}  # torchrun's, named in fit --speed's help


SOURCES = ("robustcompress", "export/robustcompress_runtime", "apps")


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
        for file in sorted((REPO_ROOT / package).rglob("*.py")):
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
                    found.setdefault(flag, []).append(f"{file.relative_to(REPO_ROOT)}:{node.lineno}")
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
    line = one_line(capsys.readouterr().err)
    assert "cifar10 not found under" in line and "ROBUSTCOMPRESS_DATA" in line and "download=True" in line
    assert "data_root=<" not in line and "--" not in line
    assert not (tmp_path / "out").exists()


def test_a_teacherless_distillation_names_the_cli_flags(tmp_path, capsys):
    assert main(["fit", "digits", "--method", "ard", "--out", str(tmp_path / "out")]) == 2
    assert "--teachers NAME ... or --method pgd-at" in one_line(capsys.readouterr().err)


# -- teacher weights --------------------------------------------------------------------------------------------------
def test_cli_negative_teacher_weight_is_refused_before_any_work(tmp_path, capsys):
    argv = ["fit", "digits", "--method", "ard", "--teachers", "test_resnet", "test_resnet", "--teacher-weights", "-1",
            "2", "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    assert "teacher_weights[0]=-1.0 must be at least 0" in capsys.readouterr().err
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
