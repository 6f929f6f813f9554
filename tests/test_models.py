import pytest
import torch
import torch.nn as nn

from robustcompress import create_model, load_weights
from robustcompress.models import build_model


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
