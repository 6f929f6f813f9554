from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.utils.data import Dataset, TensorDataset
from conftest import ConstantModel, TINY_FIT, never, one_line

from robustcompress import RobustCompressor, load_data
from robustcompress.cli import main
from robustcompress.data import check_images, random_crop_flip
from robustcompress.models import build_model
from robustcompress.trainer import TrainConfig
from robustcompress.verify import evaluate


def test_digits_are_real_images_in_unit_range(digits16):
    x, y = digits16.train.tensors
    assert x.shape[1:] == (3, 16, 16)
    assert 0 <= x.min() and x.max() <= 1
    assert len(digits16.train) + len(digits16.test) == 1797
    assert set(y.tolist()) == set(range(10))
    assert digits16.flip is False  # flipping digits changes their meaning


def test_digits_split_is_fixed():
    a, b = load_data("digits", 8), load_data("digits", 8)
    assert torch.equal(a.test.tensors[0], b.test.tensors[0])


def test_digits_and_their_split_are_scikit_learns_without_importing_it():
    # Read from scikit-learn's file and split by its algorithm re-done in numpy: the same images, labels and split
    # (so every cached teacher and reported number stays valid), without scikit-learn's 1.2 s import.
    sklearn = pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from robustcompress.data.core import read_digits, stratified_split

    images, labels = read_digits()
    digits = load_digits()
    assert np.array_equal(images, digits.images) and np.array_equal(labels, digits.target)
    for fraction, seed in ((0.2, 0), (0.2, 1), (0.1, 7), (0.33, 123)):
        expected = train_test_split(np.arange(len(labels)), test_size=fraction, random_state=seed, stratify=labels)
        got = stratified_split(labels, fraction, seed)
        assert all(np.array_equal(a, b) for a, b in zip(got, expected)), (fraction, seed, sklearn.__version__)


def test_npz_dataset_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=rng.integers(0, 256, (20, 12, 12, 3), dtype=np.uint8), y_train=np.arange(20) % 4,
             x_test=rng.integers(0, 256, (8, 12, 12, 3), dtype=np.uint8), y_test=np.arange(8) % 4,
             classes=np.array(["a", "b", "c", "d"]))
    bundle = load_data(str(path))
    assert bundle.num_classes == 4 and bundle.class_names == ["a", "b", "c", "d"]
    assert bundle.train.tensors[0].shape == (20, 3, 12, 12)
    assert bundle.train.tensors[0].max() <= 1
    resized = load_data(str(path), input_size=16)
    assert resized.test.tensors[0].shape == (8, 3, 16, 16)


def test_npz_missing_keys_is_explained(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="x_test"):
        load_data(str(path))


def test_unknown_dataset_suggests_close_name():
    with pytest.raises(ValueError, match="Did you mean 'digits'"):
        load_data("digit")


@pytest.mark.parametrize(
    "x, message",
    [
        (torch.rand(3, 8, 8), "rank 4"),
        (torch.rand(2, 3, 8, 8) * 255, r"\[0, 1\]"),
        (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "floating point"),
    ],
)
def test_bad_images_are_explained(x, message):
    with pytest.raises(ValueError, match=message):
        check_images(x)


def test_user_dataset_out_of_range_is_rejected():
    ds = TensorDataset(torch.rand(4, 3, 8, 8) * 255, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        load_data(ds)


def test_empty_dataset_is_rejected():
    ds = TensorDataset(torch.rand(0, 3, 8, 8), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        load_data(ds)


def test_crop_flip_keeps_shape_and_pixels():
    x = torch.rand(16, 3, 10, 10)
    out = random_crop_flip(x, padding=2, flip=True)
    assert out.shape == x.shape
    assert out.min() >= 0 and out.max() <= 1
    same = random_crop_flip(x, padding=0, flip=False)
    assert torch.equal(same, x)


# -- 7. NaN pixels, unchecked batches and float labels --------------------------------------------------------------
def test_nan_pixels_fail_the_range_check():
    x = torch.rand(4, 3, 8, 8)
    x[2, 1, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="1 NaN pixel values \\(the first in image 2\\)"):
        check_images(x)


def test_an_all_nan_test_set_is_refused_not_scored(tmp_path):
    x = torch.full((16, 3, 8, 8), float("nan"))
    with pytest.raises(ValueError, match="NaN"):
        evaluate(ConstantModel(), (x, torch.zeros(16, dtype=torch.long)), attacks=("fgsm",))
    with pytest.raises(ValueError, match="NaN"):
        load_data(TensorDataset(x, torch.zeros(16, dtype=torch.long)))


class LateBadImages(Dataset):
    """Good images at index 0 (what a probe of item 0 sees), 0..255 pixel values from index 40 on."""

    def __init__(self, base: TensorDataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y = self.base[i]
        return (x * 255 if i >= 40 else x), int(y)


def _tiny_pgd_at(out: Path) -> RobustCompressor:
    return RobustCompressor([], "test_efficientnet", method="pgd-at", out_dir=out, verify_attacks=(), **TINY_FIT)


def test_a_dataset_is_checked_batch_by_batch_not_only_at_index_0(digits8, tmp_path):
    train, test = digits8
    rc = _tiny_pgd_at(tmp_path / "out")
    with pytest.raises(ValueError, match=r"train_data images in this batch must lie in \[0, 1\]"):
        rc.fit(LateBadImages(train), val_data=test)
    assert not (tmp_path / "out" / "config.json").exists()


def _nan_in_sample_5(train: TensorDataset) -> TensorDataset:
    x, y = train.tensors
    x = x.clone()
    x[5, 1, 2, 3] = float("nan")
    return TensorDataset(x, y)


def test_a_tensor_dataset_with_one_nan_pixel_in_sample_5_is_refused_before_training(digits8, tmp_path):
    train, test = digits8
    rc = _tiny_pgd_at(tmp_path / "out")
    with pytest.raises(ValueError, match=r"train_data images contain 1 NaN pixel values \(the first in image 5\)"):
        rc.fit(_nan_in_sample_5(train), val_data=test)
    with pytest.raises(ValueError, match=r"val_data images contain 1 NaN pixel values \(the first in image 5\)"):
        rc.fit(train, val_data=_nan_in_sample_5(test))
    assert not (tmp_path / "out" / "config.json").exists()


def test_the_trainer_checks_an_in_memory_training_set_it_is_handed_directly(digits8):
    from robustcompress.methods import create_method
    from robustcompress.trainer import train

    student = build_model("test_efficientnet", 10, 8)
    config = TrainConfig(epochs=1, batch_size=64, eps=0.0, steps=0, progress=False)
    with pytest.raises(ValueError, match=r"NaN pixel values \(the first in image 5\)"):
        train(student, [], create_method("standard"), _nan_in_sample_5(digits8[0]), 10, config, torch.device("cpu"))


def test_float_labels_are_refused_not_truncated(digits8):
    train, _ = digits8
    x, y = train.tensors
    fractional = y.float()
    fractional[5] = 2.5
    with pytest.raises(ValueError, match="whole-number class indices; got 2.5"):
        load_data(TensorDataset(x, fractional))
    assert load_data(TensorDataset(x, y.float())).num_classes == 10  # whole numbers stored as floats are fine


def test_string_and_fractional_labels_in_an_npz_are_refused(tmp_path):
    images = np.zeros((4, 8, 8, 3), dtype=np.uint8)
    for labels, words in ((np.array(["cat", "dog", "cat", "dog"]), "integer class indices; got <U3"),
                          (np.array([0.0, 1.0, 1.5, 0.0]), "got 1.5")):
        path = tmp_path / "data.npz"
        np.savez(path, x_train=images, y_train=labels, x_test=images, y_test=np.zeros(4, dtype=np.int64))
        with pytest.raises(ValueError, match="y_train") as info:
            load_data(str(path))
        assert words in str(info.value)


# -- labels out of range or unseen in training: refused before training --------------------------------------------
def _npz(path: Path, **arrays) -> Path:
    images = np.random.default_rng(0).integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)
    base = dict(x_train=images, y_train=np.arange(8) % 4, x_test=images, y_test=np.arange(8) % 4)
    np.savez(path, **{**base, **arrays})
    return path


def test_npz_test_labels_unseen_in_training_are_refused(tmp_path):
    path = _npz(tmp_path / "d.npz", y_test=np.array([0, 1, 2, 3, 5, 4, 0, 1]))
    with pytest.raises(ValueError, match=r"y_test include classes that never occur in the y_train: 4, 5"):
        load_data(str(path))


def test_npz_labels_beyond_its_class_names_are_refused(tmp_path):
    path = _npz(tmp_path / "d.npz", classes=np.array(["a", "b", "c"]))
    with pytest.raises(ValueError, match=r"labels go up to 3 but 'classes' names only 3 classes"):
        load_data(str(path))


@pytest.mark.parametrize("shift, words", [(12, "val_data labels go up to 12 but the model has 10 classes"),
                                          (None, "val_data labels include classes that never occur in the "
                                                 "train_data labels: 4")])
def test_dataset_val_labels_are_checked_before_teachers_or_training(digits8, tmp_path, monkeypatch, shift, words):
    train, test = digits8
    x, y = test.tensors
    bad_y = y.clone()
    if shift is None:  # train without class 4, validate on all ten
        keep = train.tensors[1] != 4
        train = TensorDataset(train.tensors[0][keep], train.tensors[1][keep])
    else:
        bad_y[3] = shift
    monkeypatch.setattr("robustcompress.compressor.prepare_teachers", never("teacher preparation"))
    monkeypatch.setattr("robustcompress.compressor.train_student", never("training"))
    rc = RobustCompressor([], "test_efficientnet", method="pgd-at", out_dir=tmp_path / "out", verify_attacks=(), **TINY_FIT)
    with pytest.raises(ValueError) as info:
        rc.fit(train, val_data=TensorDataset(x, bad_y))
    assert words in str(info.value)
    assert not (tmp_path / "out").exists()


def test_named_data_with_a_val_dataset_is_checked_too(digits8, tmp_path, monkeypatch):
    _, test = digits8
    x, y = test.tensors
    monkeypatch.setattr("robustcompress.compressor.prepare_teachers", never("teacher preparation"))
    rc = RobustCompressor([], "test_efficientnet", method="pgd-at", out_dir=tmp_path / "out", verify_attacks=(), **TINY_FIT)
    with pytest.raises(ValueError, match="val_data labels go up to 10 but the model has 10 classes"):
        rc.fit("digits", val_data=TensorDataset(x, torch.where(y == 0, 10, y)))
    assert not (tmp_path / "out").exists()


def test_evaluation_labels_the_model_cannot_output_are_refused_before_attacks(monkeypatch):
    calls = []

    class TenClasses(nn.Module):
        def forward(self, x):
            calls.append(len(x))
            return torch.zeros(len(x), 10) + 0 * x.sum()

    x, y = torch.rand(6, 3, 8, 8), torch.tensor([0, 1, 2, 12, 3, 4])
    with pytest.raises(ValueError, match=r"evaluation labels go up to 12 but the model predicts 10 classes"):
        evaluate(TenClasses(), (x, y), attacks=("pgd20",))
    assert calls == [1]  # one probe image, no attack


def test_cli_fit_on_an_npz_with_unseen_test_labels_is_one_line(tmp_path, capsys):
    path = _npz(tmp_path / "d.npz", y_test=np.array([0, 1, 2, 3, 7, 0, 1, 2]))
    assert main(["fit", str(path), "--method", "pgd-at", "--out", str(tmp_path / "out")]) == 2
    assert "never occur in the y_train: 7" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


# -- NCHW arrays in an .npz and non-square Datasets --------------------------------------------------------------------
@pytest.mark.parametrize("shape, words", [
    ((8, 3, 8, 8), "looks channels-first (N, C, H, W)"),
    ((8, 1, 8, 8), "np.transpose(x_train, (0, 2, 3, 1))"),
    ((8, 8, 8, 2), "x_train has 2 channels"),
])
def test_npz_layouts_it_would_misread_are_refused(tmp_path, shape, words):
    x = np.zeros(shape, dtype=np.uint8)
    path = _npz(tmp_path / "d.npz", x_train=x)
    with pytest.raises(ValueError) as info:
        load_data(str(path))
    assert words in str(info.value)


def test_a_non_square_torch_dataset_is_refused():
    """A Dataset is used as it is, not resampled (an image folder or .npz is centre-cropped by the picture rule)."""
    with pytest.raises(ValueError, match="must be square"):
        load_data(TensorDataset(torch.zeros(4, 3, 8, 12), torch.zeros(4, dtype=torch.long)))


def test_good_npz_layouts_still_load(tmp_path):
    grey = np.zeros((8, 8, 8), np.uint8)
    for x in (np.zeros((8, 8, 8, 3), np.uint8), grey, grey[..., None]):
        data = load_data(str(_npz(tmp_path / "d.npz", x_train=x, x_test=x)))
        assert data.train.tensors[0].shape == (8, 3, 8, 8) and data.num_classes == 4


def test_sixteen_bit_npz_is_rescaled_like_sixteen_bit_pictures(tmp_path):
    """uint16 means 0..65535, as for a 16-bit PNG: the same pixels as the 8-bit array, not a range error."""
    from robustcompress.data.tensors import as_float_images

    eight = np.random.default_rng(1).integers(0, 256, (8, 8, 8, 3), dtype=np.uint8)
    sixteen = eight.astype(np.uint16) * 257  # 255 * 257 = 65535
    a = load_data(str(_npz(tmp_path / "a.npz", x_train=eight, x_test=eight)))
    b = load_data(str(_npz(tmp_path / "b.npz", x_train=sixteen, x_test=sixteen)))
    xa, xb = as_float_images(a.train.tensors[0]), as_float_images(b.train.tensors[0])
    assert torch.allclose(xa, xb, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_wide_integer_npz_images_say_which_dtype_to_save(tmp_path, dtype):
    x = np.zeros((8, 8, 8, 3), dtype)
    with pytest.raises(ValueError, match=f"x_train has dtype {np.dtype(dtype).name}; save 8-bit images as uint8"):
        load_data(str(_npz(tmp_path / "d.npz", x_train=x)))
