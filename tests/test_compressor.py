import json

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

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
