"""The bundle format (robustcompress.bundle): a written bundle reads back exactly, and every damage is a clear error."""
import json
from dataclasses import asdict

import pytest
import torch

from robustcompress import RobustCompressor
from robustcompress.bundle import (
    BUNDLE_KEYS_SINCE_2,
    BUNDLE_VERSION,
    bundle_beside,
    is_bundle,
    onnx_beside,
    read_bundle,
    write_bundle,
)
from robustcompress.models import build_model
from robustcompress.trainer import TrainConfig


def _model(seed: int):
    torch.manual_seed(seed)
    return build_model("test_efficientnet", 10, 8).eval()


def _record(student, teachers=()):
    return {"bundle_version": BUNDLE_VERSION, "method": "pgd-at", "method_hparams": {}, "method_kwargs": {},
            "student": student.spec(), "teachers": [t.spec() for t in teachers], "teacher_names": ["t0"],
            "train_config": asdict(TrainConfig(epochs=3, seed=7)), "teacher_epochs": 2, "verify_attacks": ["fgsm"],
            "verify_examples": 16}


@pytest.fixture
def written(tmp_path):
    student, teacher = _model(0), _model(1)
    record = _record(student, [teacher])
    folder = write_bundle(tmp_path / "bundle", record, {"student": student.state_dict(),
                                                         "teacher_0": teacher.state_dict()})
    return folder, record, student, teacher


def test_a_written_bundle_reads_back_record_and_weights(written):
    folder, record, student, teacher = written
    assert is_bundle(folder) and not is_bundle(folder.parent)
    bundle = read_bundle(folder)
    assert bundle.record == json.loads(json.dumps(record))
    assert (bundle.input_size, bundle.num_classes, bundle.method) == (8, 10, "pgd-at")
    assert bundle.train_config == TrainConfig(epochs=3, seed=7) and bundle.teacher_names == ["t0"]
    x = torch.rand(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(bundle.student()(x), student(x))
        (loaded_teacher,) = bundle.teachers()
        assert torch.equal(loaded_teacher(x), teacher(x))
    assert bundle.last_state() is None


def test_a_version_1_record_still_reads_with_the_format_defaults(written):
    folder, record, _, _ = written
    old = {k: v for k, v in record.items() if k not in BUNDLE_KEYS_SINCE_2 and k != "teacher_names"}
    (folder / "config.json").write_text(json.dumps({**old, "bundle_version": 1}))
    bundle = read_bundle(folder)
    assert (bundle.get("verify_examples"), bundle.get("teacher_epochs"), bundle.get("method_kwargs")) == (500, 10, {})
    assert bundle.teacher_names == []
    bundle.get("metrics")["changed"] = 1  # a default handed out is a copy, not the format's own
    assert bundle.get("metrics") == {}


@pytest.mark.parametrize("damage, error, words", [
    (lambda d: (d / "config.json").unlink(), FileNotFoundError, "is not a robustcompress bundle (no config.json)"),
    (lambda d: (d / "config.json").write_text("{not json"), ValueError, "is corrupt"),
    (lambda d: (d / "config.json").write_text("[1, 2]"), ValueError, "does not hold a bundle description"),
    (lambda d: _edit(d, bundle_version="2"), ValueError, "no valid 'bundle_version'"),
    (lambda d: _edit(d, bundle_version=BUNDLE_VERSION + 1), ValueError, "newer than this robustcompress reads"),
    (lambda d: _edit(d, teachers=None, drop="teachers"), ValueError, "lacks teachers"),
    (lambda d: _edit(d, train_config={"warp": 1}), ValueError, "does not know: ['warp']"),
    (lambda d: (d / "student.safetensors").unlink(), FileNotFoundError, "lacks student.safetensors"),
])
def test_a_damaged_bundle_is_one_clear_line(written, damage, error, words):
    folder = written[0]
    damage(folder)
    with pytest.raises(error) as info:
        read_bundle(folder).student()
    message = str(info.value)
    assert words in message and "\n" not in message
    assert any(hint in message for hint in ("re-save", "re-run fit", "upgrade", "pass the folder"))


def _edit(folder, drop=None, **changes):
    record = json.loads((folder / "config.json").read_text())
    if "train_config" in changes:
        changes["train_config"] = {**record["train_config"], **changes["train_config"]}
    record.update(changes)
    record.pop(drop, None)
    (folder / "config.json").write_text(json.dumps(record))


def test_a_missing_folder_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="bundle folder .*nowhere does not exist; pass the folder"):
        read_bundle(tmp_path / "nowhere")


def test_an_incomplete_record_is_refused_before_anything_is_written(tmp_path):
    student = _model(0)
    record = _record(student)
    del record["method"]
    with pytest.raises(ValueError, match="lacks method"):
        write_bundle(tmp_path / "b", record, {"student": student.state_dict()})
    assert list((tmp_path / "b").iterdir()) == []


def test_exports_and_bundles_are_found_beside_each_other(written, tmp_path):
    folder = written[0]
    assert onnx_beside(folder) is None
    (tmp_path / "student.onnx").write_bytes(b"")  # the quickstart's layout: OUT/student.onnx beside OUT/bundle
    assert onnx_beside(folder) == tmp_path / "student.onnx"
    assert bundle_beside(tmp_path / "student.onnx") == folder
    assert bundle_beside(folder / "student.onnx") == folder
    assert bundle_beside(tmp_path / "elsewhere" / "x.onnx") is None


def test_rewriting_a_folder_removes_weights_the_new_bundle_does_not_have(written):
    """A student_last or teacher_N left by an earlier bundle in the folder must not be read as the new one's."""
    folder, record, student, _ = written
    write_bundle(folder, record, {"student": student.state_dict(), "teacher_0": student.state_dict(),
                                  "student_last": student.state_dict()})
    (folder / "notes.safetensors").write_bytes(b"")  # not a bundle weight file: left alone
    write_bundle(folder, {**record, "teachers": []}, {"student": student.state_dict()})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "notes.safetensors", "student.safetensors"]
    assert read_bundle(folder).last_state() is None


# -- 3. a bundle round-trips every setting --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rich_bundle(tmp_path_factory, digits8):
    """A bundle saved with a non-default value for every setting that has one."""
    train, test = digits8
    teachers = [build_model("test_resnet", 10, 8), build_model("test_efficientnet", 10, 8)]
    out = tmp_path_factory.mktemp("roundtrip") / "bundle"
    rc = RobustCompressor(
        teachers, "test_efficientnet", method="ard", method_kwargs={"alpha": 0.7, "temperature": 4.0},
        eps=4 / 255, step_size=1 / 255, steps=1, epochs=1, batch_size=32, lr=0.03, momentum=0.8, weight_decay=1e-3,
        schedule="step", augment=False, seed=5, input_size=8, teacher_weights=[1, 3], teacher_epochs=3,
        out_dir=out, verify_attacks=("fgsm",), verify_examples=8, progress=False, speed="reference", device="cpu",
    )
    rc.fit(train, val_data=test)
    return rc, out


def test_load_round_trips_every_field_of_describe(rich_bundle):
    rc, out = rich_bundle
    loaded = RobustCompressor.load(out, device="cpu")
    before, after = rc.describe(), loaded.describe()
    assert set(before) == set(after)
    for key in before:
        assert after[key] == before[key], key
    config = loaded.train_config
    assert (config.momentum, config.weight_decay, config.schedule, config.augment, config.speed) == (
        0.8, 1e-3, "step", False, "reference")
    assert (config.crop_padding, config.flip) == (rc.train_config.crop_padding, rc.train_config.flip)
    assert loaded.config == rc.config
    assert loaded.method_kwargs == {"alpha": 0.7, "temperature": 4.0} and loaded.method.alpha == 0.7
    assert loaded.teacher_weights.tolist() == [0.25, 0.75] and loaded.teacher_epochs == 3
    assert loaded.verify_attacks == ("fgsm",) and loaded.verify_examples == 8


def test_load_then_save_keeps_the_record(rich_bundle, tmp_path):
    _, out = rich_bundle
    original = (out / "config.json").read_bytes()
    RobustCompressor.load(out, device="cpu").save(out)
    assert (out / "config.json").read_bytes() == original


@pytest.mark.parametrize("edit, words", [
    (lambda cfg: cfg.pop("method_kwargs"), "lacks method_kwargs"),
    (lambda cfg: cfg["train_config"].pop("momentum"), "lacks train_config.momentum"),
    (lambda cfg: cfg.pop("bundle_version"), "no valid 'bundle_version'"),
    (lambda cfg: cfg.update(bundle_version=99), "newer than this robustcompress"),
    (lambda cfg: cfg["train_config"].update(warp_drive=True), "does not know: ['warp_drive']"),
])
def test_a_damaged_bundle_record_is_a_clear_error(rich_bundle, tmp_path, edit, words):
    _, out = rich_bundle
    cfg = json.loads((out / "config.json").read_text())
    edit(cfg)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="config.json") as info:
        RobustCompressor.load(broken, device="cpu")
    assert words in str(info.value)


def _saved_compressor(folder, **settings):
    """A compressor with a student (no training needed to save one), saved to ``folder``."""
    from robustcompress import RobustCompressor

    rc = RobustCompressor([_model(1)], "test_efficientnet", **settings)
    rc.student = _model(0)
    rc.save(folder)
    return rc


def test_save_then_load_rebuilds_the_settings_exactly(tmp_path):
    from robustcompress import CompressConfig, RobustCompressor

    rc = _saved_compressor(
        tmp_path / "bundle", method="ard", method_kwargs={"alpha": 0.7}, eps="4/255", epochs=3, batch_size=32,
        augment=False, device="cpu", seed=5, input_size=8, teacher_weights=[3], teacher_epochs=2,
        verify_attacks=["fgsm"], verify_examples=16, progress=False, speed="reference", select="best-robust",
        val_size=0.2, out_dir=tmp_path / "bundle")
    saved = json.loads((tmp_path / "bundle" / "config.json").read_text())
    assert saved["config"] == rc.config.to_record() and saved["config"]["step_size"] is None
    loaded = RobustCompressor.load(tmp_path / "bundle", device="cpu")
    assert loaded.config == rc.config and isinstance(loaded.config, CompressConfig)
    assert loaded.method_name == "ard" and loaded.method.alpha == 0.7  # the method itself, no stand-in
    assert loaded.train_config == rc.train_config and loaded.teacher_weights.tolist() == [1.0]


def test_a_bundle_written_before_the_config_entry_still_loads(written):
    from robustcompress import CompressConfig, RobustCompressor

    folder, record, _, _ = written
    assert "config" not in json.loads((folder / "config.json").read_text())
    loaded = RobustCompressor.load(folder, device="cpu")
    assert loaded.config == CompressConfig(
        method="pgd-at", teacher_epochs=2, verify_attacks=["fgsm"], verify_examples=16,
        **{k: v for k, v in asdict(TrainConfig(epochs=3, seed=7)).items() if k in ("epochs", "seed", "eps",
                                                                                      "step_size", "lr")})
    assert loaded.train_config == TrainConfig(epochs=3, seed=7) and loaded.teacher_specs == ["t0"]
    assert "config" in loaded.describe()  # saved again, it gains the entry


def test_a_bundle_with_a_setting_this_version_does_not_know_is_refused(tmp_path):
    from robustcompress import RobustCompressor

    _saved_compressor(tmp_path / "bundle", method="pgd-at", device="cpu")
    _edit(tmp_path / "bundle", config={**json.loads((tmp_path / "bundle" / "config.json").read_text())["config"],
                                       "sharpness": 1})
    with pytest.raises(ValueError, match=r"settings this robustcompress does not know: \['sharpness'\]"):
        RobustCompressor.load(tmp_path / "bundle", device="cpu")
