import json

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from conftest import TINY_FIT, snapshot

from robustcompress import RobustCompressor, list_methods


def _small(digits16, n=128):
    x, y = digits16.train.tensors
    xt, yt = digits16.test.tensors
    return TensorDataset(x[:n], y[:n]), TensorDataset(xt[:64], yt[:64])


def test_fit_save_load_round_trip(digits16, standard_model, tmp_path):
    train_set, test_set = _small(digits16)
    rc = RobustCompressor([standard_model], "lcnet_050", method="akd", epochs=1, steps=2, batch_size=64,
                          device="cpu", out_dir=tmp_path / "bundle", verify_attacks=("pgd10",), progress=False)
    rc.fit(DataLoader(train_set, batch_size=64), val_data=test_set)
    assert set(rc.metrics["robust_acc"]) == {"pgd10"}
    config = json.loads((tmp_path / "bundle" / "config.json").read_text())
    assert config["method"] == "akd" and config["student"]["name"] == "lcnet_050"
    assert (tmp_path / "bundle" / "checkpoints" / "last.pt").is_file()

    loaded = RobustCompressor.load(tmp_path / "bundle", device="cpu")
    x = test_set.tensors[0][:8]
    with torch.no_grad():
        assert torch.allclose(rc.student.eval()(x), loaded.student(x), atol=1e-6)
        assert torch.allclose(standard_model.eval()(x), loaded.teachers[0](x), atol=1e-6)
    report = loaded.evaluate(test_set, attacks=("fgsm",), n_examples=32)
    assert report.n_examples == 32 and 0 <= report.worst_case_acc <= report.clean_acc
    # One argument order for "evaluate": rc.evaluate(data, attacks, eps, n_examples) is verify's (model, data, ...).
    from robustcompress.verify import evaluate

    same = loaded.evaluate(test_set, ("fgsm",), 4 / 255, 32)
    direct = evaluate(loaded.student, test_set, ("fgsm",), 4 / 255, 32, seed=loaded.config.seed)
    assert same.eps == 4 / 255 and same.per_sample == direct.per_sample
    with pytest.raises(ValueError, match="eps=32 is outside"):  # the old order (n_examples third) is refused
        loaded.evaluate(test_set, ("fgsm",), 32)


def test_a_student_only_bundle_evaluates_and_exports_without_teacher_weights(digits16, standard_model, tmp_path):
    """save(teachers=False) is the small bundle to share: the student and the record, no teacher weights; it loads,
    evaluates and re-saves as student-only, and asking it for teachers says why there are none."""
    from robustcompress.apps.loading import load_demo_models
    from robustcompress.bundle import read_bundle
    from robustcompress.data import DataBundle
    from robustcompress.targets import load_target

    train_set, test_set = _small(digits16, 64)
    rc = RobustCompressor([standard_model], "test_resnet", method="akd", epochs=1, steps=1, batch_size=64,
                          device="cpu", verify_attacks=(), progress=False)
    rc.fit(DataLoader(train_set, batch_size=64), val_data=test_set)
    folder = rc.save(tmp_path / "shared", teachers=False)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "student.safetensors"]
    bundle = read_bundle(folder)
    assert not bundle.teachers_saved and bundle.record["teachers"] == [standard_model.spec()]
    with pytest.raises(ValueError, match="student-only"):
        bundle.teachers()
    loaded = RobustCompressor.load(folder, device="cpu")
    x = test_set.tensors[0][:8]
    with torch.no_grad():
        assert torch.equal(rc.student.eval()(x), loaded.student(x))
    assert loaded.teachers == [] and loaded.evaluate(test_set, ("fgsm",), n_examples=16).n_examples == 16
    again = read_bundle(loaded.save(tmp_path / "again"))  # still student-only, teachers' specs kept
    assert not again.teachers_saved and again.record["teachers"] == bundle.record["teachers"]
    data = DataBundle(train=train_set, test=test_set, num_classes=10, input_size=16, channels=3, name="digits")
    assert load_target(str(folder), data, "cpu").references == {}
    with pytest.raises(ValueError, match="student-only"):
        load_demo_models(folder)


def test_bare_teacher_name_is_trained_on_the_data_and_cached(digits16, tmp_path):
    train_set, test_set = _small(digits16, 96)
    kwargs = dict(method="akd", epochs=1, steps=1, batch_size=64, teacher_epochs=1, input_size=16, device="cpu",
                  verify_attacks=(), progress=False)
    rc = RobustCompressor(["lcnet_050"], "lcnet_050", **kwargs).fit(train_set, val_data=test_set)
    again = RobustCompressor(["lcnet_050"], "lcnet_050", **kwargs)
    again._build(rc._data)
    x = test_set.tensors[0][:4]
    with torch.no_grad():
        assert torch.equal(rc.teachers[0](x), again.teachers[0](x))


def test_unknown_method_suggests_close_names():
    with pytest.raises(ValueError, match="Did you mean 'trades'"):
        RobustCompressor(["resnet18"], "resnet18", method="trade")


def test_distillation_without_teachers_is_explained():
    with pytest.raises(ValueError, match="use method='pgd-at'"):
        RobustCompressor([], "resnet18", method="rslad")


def test_bad_eps_is_explained():
    with pytest.raises(ValueError, match="8/255"):
        RobustCompressor([], "resnet18", method="pgd-at", eps=8)


def test_unwritable_output_dir_is_explained(tmp_path, digits16):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = RobustCompressor([], "lcnet_050", method="pgd-at", epochs=1, out_dir=blocker / "sub", progress=False)
    with pytest.raises(ValueError, match="not writable"):
        rc.fit(digits16)


def test_load_of_a_non_bundle_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a robustcompress bundle"):
        RobustCompressor.load(tmp_path)


def test_baseline_methods_are_registered():
    assert {"pgd-at", "trades", "ard", "rslad", "akd"} <= set(list_methods())


def test_select_best_robust_keeps_the_best_validation_epoch_and_the_last_beside_it(tmp_path):
    """select='best-robust' carves a validation split out of train, scores PGD-10 after every epoch, keeps the best
    weights as the student and writes the final ones beside it; both survive save/load."""
    from safetensors.torch import load_file

    rc = RobustCompressor([], "test_resnet", method="pgd-at", epochs=3, steps=1, batch_size=64, lr=0.1,
                          eps=8 / 255, select="best-robust", val_size=100, verify_attacks=(), progress=False,
                          out_dir=tmp_path / "run", input_size=8)
    rc.fit("digits")
    selection = rc.describe()["selection"]
    assert selection["select"] == "best_robust" and selection["val_images"] == 100
    scores = [p["score"] for p in selection["curve"]]
    assert len(scores) == 3 and selection["best"]["score"] == max(scores)
    assert selection["best_epoch"] == 1 + scores.index(max(scores))
    assert all("validation" in h for h in rc.history)
    saved = load_file(str(tmp_path / "run" / "student.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in rc.student.state_dict().items() if k in saved)
    last = load_file(str(tmp_path / "run" / "student_last.safetensors"))
    assert all(torch.equal(last[k], v) for k, v in rc.last_state.items())
    loaded = RobustCompressor.load(tmp_path / "run")
    assert loaded.selection["best_epoch"] == selection["best_epoch"] and loaded.last_state is not None
    with pytest.raises(ValueError, match="best-robust"):
        RobustCompressor([], "test_resnet", method="pgd-at", select="best")


# -- the output folder: resume, overwrite, earlier outputs, the lock (issue 29) --------------------------------------
TINY = dict(epochs=1, steps=1, batch_size=64, lr=0.05, input_size=8, device="cpu", progress=False, verify_attacks=())


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _fitted(folder, train, test, fit=None, **changes):
    """A tiny PGD-AT run into ``folder``; ``fit``: fit()'s keyword arguments (resume, overwrite, ...)."""
    kwargs = {**TINY, "out_dir": folder, **changes}
    return RobustCompressor([], "test_resnet", method="pgd-at", **kwargs).fit(train, val_data=test, **(fit or {}))


@pytest.mark.parametrize("eps, step_size, words", [
    (1, None, "eps 1 is ambiguous"), (8, None, "did you mean 8/255"), (2, None, "did you mean 2/255"),
    (8 / 255, 2, "step_size 2 is outside [0, 1]"), (8 / 255, 1, "step_size 1 is ambiguous")])
def test_a_bare_integer_eps_is_refused_by_the_api_as_by_the_cli(eps, step_size, words):
    with pytest.raises(ValueError) as info:
        RobustCompressor([], "test_resnet", method="pgd-at", eps=eps, step_size=step_size)
    assert words in str(info.value)


def test_the_api_eps_rule_keeps_zero_decimals_and_numpy_numbers():
    import numpy as np

    assert RobustCompressor([], "test_resnet", method="standard", eps=0).config.eps == 0
    assert RobustCompressor([], "test_resnet", method="pgd-at", eps=1.0).config.eps == 1.0
    assert RobustCompressor([], "test_resnet", method="pgd-at", eps=np.float32(0.5)).config.eps == 0.5


@pytest.mark.parametrize("settings, words", [
    ({"select": "best-robust", "val_size": 0}, "val_size=0 is too small"),
    ({"val_size": 1.5}, "val_size=1.5 must be below 1"),
    ({"eps": 8}, "eps 8 is outside [0, 1]"),
    ({"method": "pgdat"}, "unknown method 'pgdat'"),
    ({"method": "rslad"}, "method 'rslad' distils from teachers"),
    ({"verify_attacks": ["pgd2o"]}, "unknown attack 'pgd2o'"),
    ({"epochs": 0}, "epochs=0 is too small"),
    ({"teacher_weights": [1, -1]}, "teacher_weights[1]=-1 must be at least 0"),
])
def test_every_setting_is_checked_when_the_compressor_is_made_naming_it(settings, words):
    # made, not fitted: a bad setting fails before any data is read or teacher trained
    with pytest.raises(ValueError) as info:
        RobustCompressor([], "test_resnet", **{"method": "pgd-at", **settings})
    assert words in str(info.value) and "\n" not in str(info.value)


def test_the_settings_are_one_checked_object_checked_once(monkeypatch):
    from dataclasses import FrozenInstanceError, replace

    import robustcompress.trainer.config as train_config
    from robustcompress import CompressConfig

    calls = []
    parse_eps = train_config.parse_eps
    monkeypatch.setattr(train_config, "parse_eps", lambda value, what: calls.append(what) or parse_eps(value, what))
    rc = RobustCompressor([], "test_resnet", method="pgd-at", eps="4/255", epochs=2)
    assert calls == ["eps"]  # the one eps rule, run once (step_size follows eps: eps/4)
    assert rc.config == CompressConfig(method="pgd-at", eps=4 / 255, epochs=2)
    assert (rc.train_config.eps, rc.train_config.step_size, rc.train_config.epochs) == (4 / 255, 1 / 255, 2)
    with pytest.raises(FrozenInstanceError):
        rc.config.epochs = 0  # type: ignore[misc]
    with pytest.raises(ValueError, match="epochs=0"):
        replace(rc.config, epochs=0)
    given = RobustCompressor([], "test_resnet", config=CompressConfig(method="pgd-at", epochs=2), seed=3)
    assert given.config == CompressConfig(method="pgd-at", epochs=2, seed=3)  # keywords override the config's
    with pytest.raises(TypeError, match="no setting 'epoch'; did you mean 'epochs'"):
        RobustCompressor([], "test_resnet", method="pgd-at", epoch=3)


@pytest.mark.parametrize("changes, field", [
    ({"select": "best-robust", "val_size": 32}, "select: 'last' in the checkpoint, 'best_robust' now"),
    ({"method": "trades"}, "method: 'pgd-at' in the checkpoint, 'trades' now"),
])
def test_resume_refuses_another_selection_or_method_naming_the_field(digits8, tmp_path, changes, field):
    train, test = digits8
    _fitted(tmp_path / "run", train, test)
    written = _files(tmp_path / "run")
    method = changes.pop("method", "pgd-at")
    later = RobustCompressor([], "test_resnet", method=method, **{**TINY, "out_dir": tmp_path / "run", **changes})
    with pytest.raises(ValueError, match="cannot resume") as info:
        later.fit(train, val_data=test, resume=True)
    assert field in str(info.value) and "\n" not in str(info.value)
    assert _files(tmp_path / "run") == written


def test_resume_refuses_another_validation_split(digits8, tmp_path):
    train, test = digits8
    _fitted(tmp_path / "run", train, test, select="best-robust", val_size=32)
    with pytest.raises(ValueError, match="val_size: 32 in the checkpoint, 16 now"):
        _fitted(tmp_path / "run", train, test, select="best-robust", val_size=16, epochs=2, fit={"resume": True})


@pytest.mark.parametrize("edit", ["labels", "pixels"])
def test_resume_refuses_other_training_data_of_the_same_shape(digits8, tmp_path, edit):
    from torch.utils.data import Dataset

    train, test = digits8
    x, y = train.tensors
    other = TensorDataset(x, (y + 1) % 10) if edit == "labels" else TensorDataset(x.flip(-1), y)

    class OnTheFly(Dataset):  # a user's Dataset, not tensors in memory: its fingerprint samples items
        def __init__(self, ds):
            self.ds = ds

        def __len__(self):
            return len(self.ds)

        def __getitem__(self, i):
            return self.ds[i]

    for first, second, folder in ((train, other, "tensors"), (OnTheFly(train), OnTheFly(other), "dataset")):
        _fitted(tmp_path / folder, first, test)
        later = RobustCompressor([], "test_resnet", method="pgd-at", **{**TINY, "out_dir": tmp_path / folder})
        with pytest.raises(ValueError, match="different settings \\(train_data: '128 images of 3x8x8, digest "
                                             "[0-9a-f]+' in the checkpoint, '128 images of 3x8x8, digest [0-9a-f]+' "
                                             "now\\)"):
            later.fit(second, val_data=test, resume=True)
        later.fit(first, val_data=test, resume=True)  # the same data resumes (its one epoch is done)
        assert len(later.history) == 1


def test_resume_without_a_checkpoint_never_replaces_a_finished_bundle(digits8, tmp_path):
    import shutil

    train, test = digits8
    _fitted(tmp_path / "run", train, test)
    shutil.rmtree(tmp_path / "run" / "checkpoints")  # a bundle saved without its checkpoints, or copied
    written = _files(tmp_path / "run")
    with pytest.raises(ValueError, match="holds the outputs of an earlier run .*config.json.* but no checkpoint to "
                                         "resume from .*overwrite=True"):
        _fitted(tmp_path / "run", train, test, seed=1, fit={"resume": True})
    with pytest.raises(ValueError, match="holds the outputs of an earlier run .*overwrite=True"):
        _fitted(tmp_path / "run", train, test, seed=1)  # a new run without resume too
    assert _files(tmp_path / "run") == written
    _fitted(tmp_path / "run", train, test, seed=1, fit={"overwrite": True})
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train_config"]["seed"] == 1


def test_a_new_run_removes_every_output_of_the_earlier_one(digits8, tmp_path):
    """Exports of an earlier bundle (any .onnx, its int8 twin, their reports), its report folder, its teachers and
    checkpoints are removed by overwrite=True, and only those: other files stay."""
    train, test = digits8
    out = tmp_path / "run"
    _fitted(out, train, test, select="best-robust", val_size=32)
    earlier = ["student.onnx", "student.int8.onnx", "student.report.json", "mine.onnx", "mine.report.json",
               "teacher_0.safetensors", "verification/report.json"]
    for name in earlier:
        (out / name).parent.mkdir(exist_ok=True)
        (out / name).write_text("from the earlier run")
    (out / "notes.txt").write_text("the user's")
    with pytest.raises(ValueError, match="\\(checkpoints/, config.json, metrics.jsonl, mine.onnx and 8 more\\)"):
        _fitted(out, train, test)
    _fitted(out, train, test, fit={"overwrite": True})
    assert sorted(_files(out)) == ["checkpoints/last.pt", "config.json", "metrics.jsonl", "notes.txt",
                                   "student.safetensors"]


def test_a_resumed_run_removes_the_exports_of_the_bundle_it_replaces(digits8, tmp_path):
    train, test = digits8
    out = tmp_path / "run"
    _fitted(out, train, test)
    (out / "student.onnx").write_text("the export of epoch 1")
    _fitted(out, train, test, epochs=2, fit={"resume": True, "force": True})
    assert not (out / "student.onnx").exists() and len(json.loads((out / "config.json").read_text())["history"]) == 2


def test_a_second_run_into_a_locked_folder_stops_at_once_naming_the_holder(digits8, tmp_path, monkeypatch):
    import os
    import socket

    from robustcompress.output_folder import FolderInUseError, folder_lock

    train, test = digits8
    with folder_lock(tmp_path / "run"):
        monkeypatch.setattr("robustcompress.compressor.load_train_data", _never_called)
        with pytest.raises(FolderInUseError, match=f"in use by another robustcompress run \\(PID {os.getpid()} on "
                                                   f"host {socket.gethostname()}"):
            _fitted(tmp_path / "run", train, test)
    assert not (tmp_path / "run").exists()  # the lock's folder goes with it when nothing was written


def test_a_stale_lock_of_a_dead_process_is_taken_over(digits8, tmp_path):
    import subprocess
    import sys

    from robustcompress.output_folder import LOCK_NAME

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOCK_NAME).write_text(
        f'{{"pid": {int(dead.stdout)}, "host": "here", "started": "yesterday"}}')
    train, test = digits8
    _fitted(tmp_path / "run", train, test)
    assert (tmp_path / "run" / "config.json").is_file() and not (tmp_path / "run" / LOCK_NAME).exists()


def _never_called(*args, **kwargs):
    raise AssertionError("work started before the arguments were checked")


def test_resume_without_an_output_folder_is_refused_before_any_work(monkeypatch):
    monkeypatch.setattr("robustcompress.compressor.load_train_data", _never_called)
    rc = RobustCompressor(["test_resnet"], "test_resnet", method="akd", **TINY)
    with pytest.raises(ValueError, match="resume=True needs out_dir"):
        rc.fit("digits", resume=True)
    with pytest.raises(ValueError, match="force=True only applies to resume=True"):
        rc.fit("digits", force=True)


def test_a_run_that_fails_in_training_leaves_no_empty_folders(digits8, tmp_path):
    from torch.utils.data import Dataset

    train, test = digits8

    class NaNAt100(Dataset):
        def __len__(self):
            return len(train)

        def __getitem__(self, i):
            x, y = train[i]
            return (x * float("nan") if i == 100 else x), y

    with pytest.raises(ValueError, match="NaN"):
        _fitted(tmp_path / "out" / "run", NaNAt100(), test)
    assert list(tmp_path.iterdir()) == []


# -- 2. a seed reproduces a run -------------------------------------------------------------------------------------
def test_same_seed_gives_bit_identical_weights(digits8):
    train, test = digits8
    weights = []
    for _ in range(2):
        torch.manual_seed(len(weights))  # whatever ran before must not matter
        rc = RobustCompressor([], "test_efficientnet", method="pgd-at", seed=3, verify_attacks=(), **TINY_FIT)
        rc.fit(train, val_data=test)
        weights.append(rc.student.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


# -- 4. resume refuses a different run ------------------------------------------------------------------------------
def test_resume_with_other_settings_is_refused_then_forced_and_recorded(digits8, tmp_path):
    train, test = digits8
    out = tmp_path / "run"
    common = dict(verify_attacks=("fgsm",), verify_examples=8, out_dir=out, **{**TINY_FIT, "epochs": 1})
    RobustCompressor([], "test_efficientnet", method="pgd-at", **common).fit(train, val_data=test)
    written = snapshot(out)
    changed = {**common, "lr": 0.2, "steps": 2, "epochs": 2}
    with pytest.raises(ValueError, match="cannot resume") as info:
        RobustCompressor([], "test_efficientnet", method="trades", **changed).fit(train, val_data=test, resume=True)
    message = str(info.value)
    for field in ("lr: 0.05 in the checkpoint, 0.2 now", "steps", "epochs", "method: 'pgd-at'", "--force"):
        assert field in message
    assert snapshot(out) == written  # nothing was trained or overwritten

    rc = RobustCompressor([], "test_efficientnet", method="pgd-at", **{**common, "epochs": 2, "lr": 0.2})
    rc.fit(train, val_data=test, resume=True, force=True)
    history = json.loads((out / "config.json").read_text())["history"]
    assert len(history) == 2 and "resumed_with_changes" not in history[0]
    assert history[1]["resumed_with_changes"] == {"epochs": {"checkpoint": 1, "now": 2},
                                                  "lr": {"checkpoint": 0.05, "now": 0.2}}


def test_resume_with_another_student_is_refused(digits8, tmp_path):
    train, test = digits8
    common = dict(verify_attacks=(), out_dir=tmp_path, **TINY_FIT)
    RobustCompressor([], "test_efficientnet", method="pgd-at", **common).fit(train, val_data=test)
    with pytest.raises(ValueError, match="student.*test_efficientnet"):
        RobustCompressor([], "test_resnet", method="pgd-at", **common).fit(train, val_data=test, resume=True)
