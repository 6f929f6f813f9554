"""Teachers from anywhere: checkpoint layouts, timm weights offline, aliases, head replacement and fine-tuning,
and class names from an image folder reaching the bundle, the ONNX metadata and the demo."""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from robustcompress.models import build_model, is_pretrained_source, resolve_model
from robustcompress.models.sources import PRETRAINED_ALIASES, replace_classifier, timm_pretrained
from robustcompress.teachers import prepare_teachers

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = "test_resnet"
CLASSES = ("cat", "dog", "emu")


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(1)
    return build_model(TINY, 7, 16)


def _save(state: dict, path: Path) -> Path:
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return path


@pytest.mark.parametrize("layout", ["plain", "state_dict", "model+epoch", "nested", "module.", "compiled ddp",
                                    "wrapper net.", "safetensors"])
def test_checkpoint_layouts_load_into_the_timm_model(reference, tmp_path, layout):
    state = reference.net.state_dict()
    saved = {
        "plain": state,
        "state_dict": {"state_dict": state},
        "model+epoch": {"model": state, "epoch": torch.tensor(3), "optimizer": {"lr": torch.tensor(0.1)}},
        "nested": {"student": {"net": state}},
        "module.": {f"module.{k}": v for k, v in state.items()},
        "compiled ddp": {f"module._orig_mod.{k}": v for k, v in state.items()},
        "wrapper net.": reference.state_dict(),
        "safetensors": state,
    }[layout]
    path = _save(saved, tmp_path / ("w.safetensors" if layout == "safetensors" else "w.pth"))
    model = resolve_model((TINY, str(path)), input_size=16)
    assert model.num_classes == 7  # read from the checkpoint's classifier, not assumed
    assert _same_weights(model.net, reference.net)
    assert is_pretrained_source((TINY, str(path)))


def test_classic_cifar_resnet_layout_is_detected_with_its_small_stem(tmp_path):
    torch.manual_seed(0)
    timm_layout = build_model("resnet18", 10, 32, small_input=True)

    def classic_name(key: str) -> str:  # timm's names back to kuangliu/pytorch-cifar's
        key = key.replace(".downsample.", ".shortcut.")
        return "linear." + key.removeprefix("fc.") if key.startswith("fc.") else key

    classic = {classic_name(k): v for k, v in timm_layout.net.state_dict().items()}
    assert any(k.startswith("linear.") for k in classic) and any(".shortcut." in k for k in classic)
    path = _save({f"module.{k}": v for k, v in classic.items()}, tmp_path / "cifar_resnet.pt")
    model = resolve_model(("resnet18", str(path)), input_size=96)  # 96 px: timm's 7x7 stem; the weights say 3x3
    assert model.small_input and model.num_classes == 10
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), timm_layout.eval()(x))


def test_pickled_model_is_refused_with_a_way_out(reference, tmp_path):
    path = tmp_path / "whole_model.pt"
    torch.save(reference, path)
    with pytest.raises(ValueError, match="could not be read.*state_dict"):
        resolve_model((TINY, str(path)), input_size=16)


def test_checkpoint_of_another_architecture_names_the_problem(reference, tmp_path):
    path = _save(reference.net.state_dict(), tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match="does not fit timm 'resnet18'"):
        resolve_model(("resnet18", str(path)), input_size=16)


def test_timm_pretrained_loads_a_local_file_through_timms_own_loader(tmp_path):
    torch.manual_seed(2)
    import timm

    net = timm.create_model(TINY, pretrained=False)  # the ImageNet layout timm's pre-trained weights have
    path = _save(net.state_dict(), tmp_path / "test_resnet.safetensors")
    model = timm_pretrained(TINY, 16, file=path)
    assert _same_weights(model.net, net) and model.num_classes == 1000 and not model.small_input
    assert model.name == TINY and model.spec()["mean"] == list(net.pretrained_cfg["mean"])


@pytest.mark.parametrize("spec", [f"{TINY}:pretrained", f"hf-hub:timm/{TINY}.r160_in1k"])
def test_weights_missing_offline_give_one_clear_line_quickly_without_network(spec, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "empty_hub_cache"))
    connections: list = []
    monkeypatch.setattr(socket.socket, "connect", lambda self, *a: connections.append(a) or (_ for _ in ()).throw(
        OSError("network used")))
    before = os.environ.get("HF_HUB_OFFLINE"), hub.HF_HUB_OFFLINE
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match=r"not available offline .*--teachers test_resnet=weights") as info:
        resolve_model(spec, input_size=16)
    assert time.perf_counter() - start < 10
    assert "\n" not in str(info.value) and not connections
    assert (os.environ.get("HF_HUB_OFFLINE"), hub.HF_HUB_OFFLINE) == before  # offline only inside the call


def test_alias_loads_pyautoattacks_cifar10_resnet18():
    assert "cifar10_resnet18_autoattack" in PRETRAINED_ALIASES and is_pretrained_source("cifar10_resnet18_autoattack")
    assert not is_pretrained_source("resnet18")  # a bare name is trained from scratch
    model = resolve_model("cifar10_resnet18_autoattack", input_size=32)
    assert model.name == "resnet18" and model.num_classes == 10 and not model.training
    assert PRETRAINED_ALIASES["cifar10_resnet18_autoattack"].class_names[0] == "airplane"


def test_unknown_pretrained_spec_lists_the_forms():
    with pytest.raises(ValueError, match="NAME:pretrained.*cifar10_resnet18_autoattack"):
        resolve_model("no such thing", input_size=16)


def test_replace_classifier_is_seeded():
    a = replace_classifier(build_model(TINY, 7, 16), 3, seed=5)
    b = replace_classifier(build_model(TINY, 7, 16), 3, seed=5)
    assert a.num_classes == 3 and torch.equal(a.net.fc.weight, b.net.fc.weight)


# -- class counts, head replacement and fine-tuning ----------------------------------------------------------------
def test_class_count_mismatch_is_an_error_unless_fine_tuning(reference, digits16, tmp_path):
    path = _save(reference.net.state_dict(), tmp_path / "seven.safetensors")
    with pytest.raises(ValueError, match=r"predicts 7 classes but the data has 10; pass teacher_finetune_epochs"):
        prepare_teachers([(TINY, str(path))], digits16, progress=False)
    (teacher,) = prepare_teachers([(TINY, str(path))], digits16, finetune_epochs=1, batch_size=128, progress=False)
    info = teacher.teacher_info
    assert teacher.num_classes == 10 and teacher.spec()["num_classes"] == 10
    assert info["source"] == "pre-trained, fine-tuned" and info["epochs"] == 1
    assert 0 <= info["val_clean_before"] <= info["val_clean_after"] <= 1
    with torch.no_grad():
        assert teacher(torch.rand(2, 3, 16, 16)).shape == (2, 10)


def test_bare_names_are_trained_not_fine_tuned(digits16):
    (teacher,) = prepare_teachers([TINY], digits16, train_epochs=1, finetune_epochs=1, progress=False)
    assert teacher.teacher_info["source"] == "trained" and "val_clean_before" not in teacher.teacher_info


# -- an image folder end to end: class names in config.json, ONNX metadata, the demo -----------------------------
def _colour_folder(root: Path, per_class: int) -> None:
    """Three classes of 12x12 pictures told apart by their dominant colour channel."""
    rng = np.random.default_rng(0)
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 90, (12, 12, 3), dtype=np.uint8)
            pixels[..., label] += 160
            Image.fromarray(pixels).save(root / name / f"{i}.png")


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pictures")
    _colour_folder(root / "train", 10)
    _colour_folder(root / "test", 3)
    return root


@pytest.fixture(scope="module")
def seven_class_checkpoint(reference, tmp_path_factory) -> Path:
    return _save(reference.net.state_dict(), tmp_path_factory.mktemp("ckpt") / "seven.safetensors")


def test_image_folder_fit_carries_class_names_into_bundle_onnx_and_demo(folder, seven_class_checkpoint, tmp_path):
    from robustcompress.apps.handler import gallery_images, load_demo_models
    from robustcompress import RobustCompressor
    from robustcompress.export.onnx import read_metadata

    rc = RobustCompressor([(TINY, str(seven_class_checkpoint))], "test_efficientnet", method="pgd-at",
                          teacher_finetune_epochs=1, epochs=1, steps=1, batch_size=16, input_size=16, device="cpu",
                          verify_attacks=("pgd5",), verify_examples=9, progress=False, out_dir=tmp_path / "bundle")
    rc.fit(str(folder))
    config = json.loads((tmp_path / "bundle" / "config.json").read_text())
    assert config["data"]["class_names"] == list(CLASSES) and config["data"]["source"] == str(folder.resolve())
    assert config["teacher_finetune_epochs"] == 1
    (info,) = config["teachers_info"]
    assert info["source"] == "pre-trained, fine-tuned" and {"val_clean_before", "val_clean_after"} <= set(info)

    # Reloaded bundle, no --data: the export verifies on the folder the bundle was trained on.
    loaded = RobustCompressor.load(tmp_path / "bundle", device="cpu")
    assert loaded.teachers_info == config["teachers_info"]
    result = loaded.export_onnx(tmp_path / "bundle" / "student.onnx", n_parity=6, latency_runs=0, attack_steps=1)
    assert read_metadata(result["path"])["class_labels"] == list(CLASSES)
    assert result["report"]["data"]["eval_examples"] == 6

    models = load_demo_models(tmp_path / "bundle")
    assert models.class_names == list(CLASSES) and models.data_source == str(folder.resolve())
    x, y = gallery_images(models.dataset, models.input_size, per_class=2, source=models.data_source)
    assert x.shape == (6, 3, 16, 16) and y.tolist() == [0, 0, 1, 1, 2, 2]


def test_cli_fit_evaluate_export_on_an_image_folder(folder, seven_class_checkpoint, tmp_path, capsys):
    from robustcompress.cli import main

    bundle = tmp_path / "bundle"
    assert main(["fit", str(folder), "--teachers", f"{TINY}={seven_class_checkpoint}", "--finetune-teachers", "1",
                 "--student", "test_efficientnet", "--method", "pgd-at", "--epochs", "1", "--steps", "1",
                 "--batch-size", "16", "--input-size", "16", "--device", "cpu", "--out", str(bundle)]) == 0
    out = capsys.readouterr().out
    assert f"teacher 0 ({TINY}@seven.safetensors): validation clean accuracy" in out
    assert main(["evaluate", str(bundle), str(folder), "--attacks", "fgsm", "--checks", "none",
                 "--json", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["n_examples"] == 9
    assert main(["export", str(bundle), "--data", str(folder), "--examples", "9", "--latency-runs", "0",
                 "--attack-steps", "1"]) == 0
    assert (bundle / "student.onnx").is_file()


def test_cli_names_the_fix_for_a_class_count_mismatch(folder, seven_class_checkpoint, tmp_path, capsys):
    from robustcompress.cli import main

    code = main(["fit", str(folder), "--teachers", f"{TINY}={seven_class_checkpoint}", "--student",
                 "test_efficientnet", "--epochs", "1", "--input-size", "16", "--device", "cpu",
                 "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err
    assert code == 2 and "predicts 7 classes but the data has 3" in err and "--finetune-teachers N" in err


def test_fine_tuning_that_never_beats_a_new_random_head_warns_naming_the_images(folder, seven_class_checkpoint,
                                                                                caplog):
    """A head replaced for another class count starts at chance; a fine-tune that keeps that start (epoch 0) distils
    from a random head, so it is said, with how many held-out images decided it (here the one a 30-image folder
    holds out, which the random head happens to get right)."""
    from robustcompress import load_data

    data = load_data(str(folder), 16)
    with caplog.at_level("WARNING", logger="robustcompress"):
        (teacher,) = prepare_teachers([(TINY, str(seven_class_checkpoint))], data, finetune_epochs=1, batch_size=16,
                                      progress=False)
    words = ("teacher 0 (test_resnet@seven.safetensors): fine-tuning never beat its new random classifier head on "
             "the 1 held-out image(s) that decided it (validation clean accuracy 100.0% before")
    assert teacher.teacher_info["epoch"] == 0 and words in teacher.teacher_info["warning"]
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [teacher.teacher_info["warning"]]
