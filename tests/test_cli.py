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
