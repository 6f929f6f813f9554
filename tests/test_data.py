import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from robustcompress import load_data
from robustcompress.data import check_images, random_crop_flip


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
