"""Models: timm wrappers with normalisation inside, checkpoints, and the one model factory (resolve_model) that every
spec kind and every caller (teachers, students, bundles, verification targets) goes through."""
import ast
import json
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

from robustcompress import create_model, load_weights
from robustcompress.models import ImageClassifier, build_model, resolve_model


def test_small_input_stem_keeps_resolution_and_is_recorded():
    model = build_model("resnet18", 10, 32)
    assert model.small_input
    assert any("conv1" in change for change in model.adaptations)
    assert isinstance(model.net.maxpool, nn.Identity)
    large = build_model("resnet18", 10, 224)
    assert large.adaptations == []


def test_normalisation_lives_inside_the_model():
    model = build_model("lcnet_050", 10, 16).eval()
    x = torch.rand(2, 3, 16, 16)
    manual = model.net((x - model.mean) / model.std)
    assert torch.allclose(model(x), manual)


def test_unknown_model_suggests_close_match():
    with pytest.raises(ValueError, match="resnet18"):
        create_model("resnet19", 10, 32)


def test_class_count_mismatch_is_explained():
    module = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 1000))
    with pytest.raises(ValueError, match="predicts 1000 classes but the data has 10; pass num_classes=10"):
        create_model(module, 10, 8, role="teacher 'mlp'")


def test_input_size_mismatch_is_explained():
    module = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    with pytest.raises(ValueError, match="cannot classify 3x16x16"):
        create_model(module, 10, 16)


def test_checkpoint_pair_loads_weights(tmp_path):
    from safetensors.torch import save_file

    source = build_model("lcnet_050", 10, 16)
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.net.state_dict().items()}, str(path))
    loaded = create_model(("lcnet_050", str(path)), 10, 16)
    x = torch.rand(2, 3, 16, 16)
    assert torch.allclose(source.eval()(x), loaded.eval()(x))


def test_missing_and_corrupt_checkpoints_are_explained(tmp_path):
    model = build_model("lcnet_050", 10, 16)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_weights(model, tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not be read"):
        load_weights(model, bad)


def test_checkpoint_for_other_class_count_is_explained(tmp_path):
    other = build_model("lcnet_050", 5, 16)
    path = tmp_path / "five.pt"
    torch.save(other.state_dict(), path)
    with pytest.raises(ValueError, match="does not fit"):
        load_weights(build_model("lcnet_050", 10, 16), path)


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and "unexpected " not in text.lower()[:11]
    return text


def test_a_checkpoint_with_missing_and_extra_keys_names_them(tmp_path):
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in build_model("lcnet_050", 10, 16).net.state_dict().items()}
    missing = sorted(state)[:2]
    for key in missing:
        del state[key]
    state["extra.weight"] = torch.zeros(3)
    path = tmp_path / "edited.safetensors"
    save_file(state, str(path))
    for load in (lambda: load_weights(build_model("lcnet_050", 10, 16), path),
                 lambda: create_model(("lcnet_050", str(path)), 10, 16)):
        with pytest.raises(ValueError) as exc:
            load()
        text = _one_line(exc)
        assert str(path) in text and "2 missing" in text and "1 unexpected" in text
        assert all(f"'{key}'" in text for key in missing) and "'extra.weight'" in text


def test_a_checkpoint_with_many_missing_keys_shows_a_few(tmp_path):
    state = build_model("lcnet_050", 10, 16).net.state_dict()
    path = tmp_path / "half.pt"
    torch.save({k: v for i, (k, v) in enumerate(state.items()) if i % 2}, path)
    with pytest.raises(ValueError) as exc:
        load_weights(build_model("lcnet_050", 10, 16), path)
    text = _one_line(exc)
    assert f"{len(state) - len(state) // 2} missing" in text and "..." in text and len(text) < 600


def test_nan_weights_are_refused_naming_the_file_and_tensor(tmp_path):
    model = build_model("lcnet_050", 10, 16)
    state = {k: v.clone() for k, v in model.net.state_dict().items()}
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first][0] = float("nan")
    path = tmp_path / "diverged.pt"
    torch.save(state, path)
    for load in (lambda: load_weights(build_model("lcnet_050", 10, 16), path),
                 lambda: create_model(("lcnet_050", str(path)), 10, 16, role="teacher")):
        with pytest.raises(ValueError) as exc:
            load()
        text = _one_line(exc)
        assert str(path) in text and "NaN or infinite" in text and f"'{first}'" in text
    with torch.no_grad():
        model.net.state_dict()[first][0] = float("nan")  # a module handed over with NaN weights
    with pytest.raises(ValueError) as exc:
        create_model(model, 10, 16, role="teacher 'lcnet_050'")
    text = _one_line(exc)
    assert "teacher 'lcnet_050'" in text and "NaN or infinite" in text and first in text


# -- the one model factory ------------------------------------------------------------------------------------------
TINY = "test_resnet"
PACKAGE = Path(__file__).resolve().parents[1] / "robustcompress"


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def source():
    torch.manual_seed(4)
    return build_model(TINY, 7, 16).eval()


@pytest.fixture(scope="module")
def checkpoint(source, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "seven.safetensors"
    save_file({k: v.contiguous() for k, v in source.net.state_dict().items()}, str(path))
    return path


def _local_hub(root: Path, repo: str, net: nn.Module, mean: list[float]) -> None:
    """A Hugging Face cache holding a timm model at ``repo``, laid out as the hub client reads it offline."""
    folder = root / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0" * 40)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(snapshot / "model.safetensors"))
    (snapshot / "config.json").write_text(json.dumps({"architecture": TINY, "num_classes": net.num_classes,
                                                      "pretrained_cfg": {"mean": mean, "std": [0.25] * 3}}))


@pytest.mark.parametrize("kind", ["timm name", "NAME=PATH", "(NAME, PATH)", "name + checkpoint_path", "spec record",
                                  "module", "ImageClassifier"])
def test_every_spec_kind_resolves_through_the_one_factory(kind, source, checkpoint):
    spec, kwargs = {
        "timm name": (TINY, dict(num_classes=7)),
        "NAME=PATH": (f"{TINY}={checkpoint}", {}),
        "(NAME, PATH)": ((TINY, checkpoint), {}),
        "name + checkpoint_path": (TINY, dict(checkpoint_path=checkpoint)),
        "spec record": (source.spec(), dict(checkpoint_path=checkpoint)),
        "module": (source.net, {}),
        "ImageClassifier": (source, {}),
    }[kind]
    model = resolve_model(spec, input_size=16, **kwargs)
    assert isinstance(model, ImageClassifier) and model.num_classes == 7 and model.input_size == 16
    if kind == "timm name":
        assert model.training and model.small_input and not _same_weights(model.net, source.net)
    elif kind == "ImageClassifier":
        assert model is source
    elif kind == "module":  # a bare module reads [0, 1] images: identity normalisation
        assert model.net is source.net and model.spec()["mean"] == [0.0] * 3 and model.name == type(source.net).__name__
    else:  # loaded weights come back in eval mode
        assert _same_weights(model.net, source.net) and not model.training


def test_timms_pretrained_weights_resolve_from_local_files_without_network(tmp_path, monkeypatch):
    import socket

    import huggingface_hub.constants as hub
    import timm

    monkeypatch.setattr(socket.socket, "connect", lambda *a: (_ for _ in ()).throw(OSError("network used")))
    torch.manual_seed(5)
    net = timm.create_model(TINY, num_classes=5)
    _local_hub(tmp_path / "hub", "acme/tiny", net, [0.5] * 3)  # the hub's files, standing in locally
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    model = resolve_model("hf-hub:acme/tiny", num_classes=5, input_size=16)
    assert model.name == TINY and model.num_classes == 5 and not model.training and not model.small_input
    assert _same_weights(model.net, net) and model.spec()["mean"] == [0.5] * 3
    imagenet = timm.create_model(TINY)  # the layout of timm's own pre-trained weights, in a local file
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in imagenet.state_dict().items()}, str(path))
    model = resolve_model(f"{TINY}:pretrained", checkpoint_path=path, input_size=16)  # through timm's own loader
    assert model.num_classes == 1000 and _same_weights(model.net, imagenet)
    assert model.spec()["mean"] == list(imagenet.pretrained_cfg["mean"])


def test_the_factory_explains_what_it_cannot_build(checkpoint):
    with pytest.raises(ValueError, match=r"unknown model 'resnet19'.*'resnet18'.*NAME:pretrained.*NAME=CHECKPOINT"):
        resolve_model("resnet19", num_classes=10, input_size=32)
    with pytest.raises(ValueError, match="needs num_classes="):
        resolve_model(TINY, input_size=16)
    with pytest.raises(ValueError, match="names its checkpoint already"):
        resolve_model(f"{TINY}={checkpoint}", checkpoint_path=checkpoint, input_size=16)
    with pytest.raises(ValueError, match="predicts 7 classes but the data has 10"):
        resolve_model(f"{TINY}={checkpoint}", num_classes=10, input_size=16)
    with pytest.raises(ValueError, match="must be a timm name, 'NAME:pretrained'.*an nn.Module; got 3"):
        resolve_model(3, input_size=16)


def test_checking_a_model_draws_nothing_from_torchs_random_generator(source):
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    resolve_model(source, num_classes=7, input_size=16)
    assert torch.equal(torch.rand(3), expected)


def _bundle_record(student: ImageClassifier) -> dict:
    from robustcompress.bundle import BUNDLE_VERSION
    from robustcompress.trainer import TrainConfig

    return {"bundle_version": BUNDLE_VERSION, "method": "pgd-at", "method_hparams": {}, "method_kwargs": {},
            "student": student.spec(), "teachers": [], "teacher_names": [],
            "train_config": asdict(TrainConfig(epochs=1, seed=0)), "teacher_epochs": 1, "verify_attacks": ["fgsm"],
            "verify_examples": 16}


def test_teachers_students_bundles_and_cli_targets_are_built_by_the_factory(digits16, checkpoint, tmp_path,
                                                                            monkeypatch):
    import robustcompress.models as models
    from robustcompress import RobustCompressor
    from robustcompress.bundle import write_bundle
    from robustcompress.distill import initial_student
    from robustcompress.targets import load_target
    from robustcompress.teachers import prepare_teachers

    torch.manual_seed(6)
    ten_classes = tmp_path / "ten.safetensors"
    save_file({k: v.contiguous() for k, v in build_model(TINY, 10, 16).net.state_dict().items()}, str(ten_classes))
    built: list = []

    def spy(spec, **kwargs):
        built.append(spec)
        return models.factory.resolve_model(spec, **kwargs)

    for name, module in list(sys.modules.items()):  # every module that imported the factory calls the spy instead
        if name.startswith("robustcompress.") and module is not models.factory and \
                getattr(module, "resolve_model", None) is models.factory.resolve_model:
            monkeypatch.setattr(module, "resolve_model", spy)
    (teacher,) = prepare_teachers([f"{TINY}={ten_classes}"], digits16, progress=False)  # as the CLI passes it
    assert f"{TINY}={ten_classes}" in built and teacher.num_classes == 10
    student = initial_student("test_efficientnet", 10, 16, 3, seed=0)
    assert "test_efficientnet" in built
    folder = write_bundle(tmp_path / "bundle", _bundle_record(student), {"student": student.state_dict()})
    built.clear()
    reloaded = RobustCompressor.load(folder)  # run_record.restore_run
    assert built == [student.spec()] and _same_weights(reloaded.student, student)
    target = load_target(f"{TINY}={ten_classes}", digits16, "cpu")  # robustcompress evaluate NAME=CHECKPOINT
    assert built[-1] == f"{TINY}={ten_classes}" and target.info["checkpoint"] == str(ten_classes)


#: The factory's building blocks: outside robustcompress/models nothing may call them (resolve_model does).
BUILDING_BLOCKS = {"timm_classifier", "load_checkpoint_model", "timm_pretrained", "load_autoattack_resnet18",
                   "create_model", "build_model", "ImageClassifier"}


def test_no_module_outside_models_builds_a_model_but_through_the_factory():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if PACKAGE / "models" in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if name in BUILDING_BLOCKS:
                    offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {name}")
    assert offenders == []
