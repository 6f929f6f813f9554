"""Settings are checked before any work: numbers at construction, in the API, the CLI and config files; one eps rule
everywhere."""
from __future__ import annotations

import pytest
from conftest import ConstantModel, one_line

from robustcompress import RobustCompressor
from robustcompress.cli import main
from robustcompress.cli.common import parse_eps
from robustcompress.trainer import TrainConfig
from robustcompress.verify import evaluate

pytestmark = pytest.mark.usefixtures("one_thread")


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
    err = _fit_config_error(tmp_path, capsys, f"data: digits\nmethod: pgd-at\n{line}\n")
    assert words in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("weights, words", [("[-1, 2]", "teacher_weights[0]=-1 must be at least 0"),
                                            ("[1, .nan]", "teacher_weights[1] must be a finite number"),
                                            ("'1, 2'", "teacher_weights must be a list of numbers")])
def test_config_teacher_weights_are_validated(tmp_path, capsys, weights, words):
    text = f"data: digits\nmethod: ard\nteachers: [test_resnet, test_resnet]\nteacher_weights: {weights}\n"
    assert words in one_line(_fit_config_error(tmp_path, capsys, text))


def _fit_config_error(tmp_path, capsys, text: str) -> str:
    """What `robustcompress fit --config` prints for a config file holding ``text``: refused, nothing written."""
    config = tmp_path / "run.yaml"
    config.write_text(text)
    assert main(["fit", "--config", str(config), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()
    return capsys.readouterr().err
