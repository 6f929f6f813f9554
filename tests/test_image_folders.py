"""Image folders as data: layouts, every image mode, bad files, caching, and the real CIFAR-10 JPEG copy."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robustcompress import load_data
from robustcompress.data.folders import load_image_folder
from robustcompress.data.tensors import PixelDataset
from robustcompress_runtime.images import picture_to_array, picture_to_rgb8

CIFAR_JPG = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_jpg"


def _rgb(seed: int, size: tuple[int, int] = (12, 12)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def _make_folder(root: Path, classes: dict[str, int], start: int = 0, suffix: str = ".png") -> None:
    for k, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.fromarray(_rgb(start + 100 * k + i)).save(root / name / f"{i:03d}{suffix}")


def test_train_test_layout_is_split_by_folders_with_class_names_from_folder_names(tmp_path):
    _make_folder(tmp_path / "train", {"cat": 5, "dog": 4, "emu": 3})
    _make_folder(tmp_path / "test", {"cat": 2, "dog": 2, "emu": 1}, start=50)
    data = load_data(str(tmp_path), progress=False)
    assert data.class_names == ["cat", "dog", "emu"] and data.num_classes == 3
    assert (len(data.train), len(data.test)) == (12, 5)
    assert isinstance(data.train, PixelDataset) and data.train.tensors[0].dtype == torch.uint8
    assert data.train.tensors[1].tolist() == [0] * 5 + [1] * 4 + [2] * 3
    x, y = data.train[0]
    assert x.dtype == torch.float32 and x.shape == (3, 12, 12) and 0 <= x.min() and x.max() <= 1
    expected = torch.from_numpy(_rgb(0)).permute(2, 0, 1).float() / 255
    assert torch.equal(x, expected)  # PNG pixels arrive exactly
    assert data.source == str(tmp_path.resolve())


def test_val_folder_counts_as_the_test_split(tmp_path):
    _make_folder(tmp_path / "train", {"a": 3, "b": 3})
    _make_folder(tmp_path / "val", {"a": 1, "b": 1}, start=9)
    assert len(load_data(str(tmp_path), progress=False).test) == 2


def test_class_folders_alone_get_a_seeded_stratified_holdout(tmp_path):
    _make_folder(tmp_path, {"a": 10, "b": 20})
    data = load_image_folder(tmp_path, holdout=0.2, seed=3, progress=False)
    assert (len(data.train), len(data.test)) == (24, 6)
    assert sorted(data.test.tensors[1].tolist()) == [0, 0, 1, 1, 1, 1]  # 20% of each class
    again = load_image_folder(tmp_path, holdout=0.2, seed=3, progress=False, cache=False)
    assert torch.equal(again.test.tensors[0], data.test.tensors[0])
    other = load_image_folder(tmp_path, holdout=6, seed=4, progress=False)
    assert len(other.test) == 6 and not torch.equal(other.test.tensors[0], data.test.tensors[0])


def test_nested_folders_inside_a_class_belong_to_that_class(tmp_path):
    _make_folder(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "b" / "more").mkdir()
    Image.fromarray(_rgb(7)).save(tmp_path / "b" / "more" / "x.png")
    (tmp_path / "b" / "notes.txt").write_text("not an image")
    data = load_image_folder(tmp_path, holdout=1, progress=False)
    labels = torch.cat([data.train.tensors[1], data.test.tensors[1]])
    assert sorted(labels.tolist()) == [0, 0, 1, 1, 1]


def test_non_square_images_are_resized_on_the_short_side_and_centre_cropped(tmp_path):
    wide = np.zeros((20, 40, 3), np.uint8)
    wide[:, 10:30] = 200  # the central 20x20 square is bright, the sides dark
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        Image.fromarray(wide).save(tmp_path / name / "w.png")
        Image.fromarray(wide).save(tmp_path / name / "w2.png")
    data = load_image_folder(tmp_path, input_size=10, holdout=2, progress=False)
    x, _ = data.train[0]
    assert x.shape == (3, 10, 10)
    assert torch.allclose(x, torch.full_like(x, 200 / 255))


def test_every_image_mode_converts_like_the_runtime_and_the_demo(tmp_path):
    """Palette, greyscale, RGBA, LA, CMYK, 16-bit greyscale, 1-bit, WebP, BMP and JPEG all load, by one rule."""
    from robustcompress.apps.handler import image_to_tensor
    from robustcompress_runtime.runtime import image_to_chw

    rgba = np.concatenate([_rgb(1), np.tile(np.array([0, 128, 255], np.uint8), 48).reshape(12, 12, 1)], -1)
    sixteen = (np.arange(144, dtype=np.uint16).reshape(12, 12) * 450).astype(np.uint16)
    pictures = {
        "rgba.png": Image.fromarray(rgba, "RGBA"),
        "la.png": Image.fromarray(rgba[..., [0, 3]], "LA"),
        "grey.png": Image.fromarray(_rgb(2)[..., 0], "L"),
        "palette.png": Image.fromarray(_rgb(3)).convert("P"),
        "cmyk.jpg": Image.fromarray(_rgb(4)).convert("CMYK"),
        "sixteen.png": Image.fromarray(sixteen),  # uint16 -> I;16 (mode= is deprecated)
        "bits.png": Image.fromarray(_rgb(5)[..., 0] > 127),
        "photo.webp": Image.fromarray(_rgb(6)),
        "photo.bmp": Image.fromarray(_rgb(8)),
        "photo.jpg": Image.fromarray(_rgb(9)),
    }
    for name, picture in pictures.items():
        for cls in ("a", "b"):
            (tmp_path / cls).mkdir(exist_ok=True)
            picture.save(tmp_path / cls / name)
    data = load_image_folder(tmp_path, input_size=12, holdout=0.5, progress=False, cache=False)
    assert len(data.train) + len(data.test) == 2 * len(pictures)
    for name in pictures:
        path = tmp_path / "a" / name
        fit_pixels = torch.from_numpy(picture_to_rgb8(path, 12)).permute(2, 0, 1).float() / 255
        runtime = torch.from_numpy(image_to_chw(str(path), 12))
        demo, _ = image_to_tensor(str(path), 12)
        assert torch.equal(runtime, fit_pixels), name
        assert torch.equal(demo[0], fit_pixels), name
    # 16-bit values are rescaled from their full range (Pillow alone would clip them to 255).
    grey16 = picture_to_array(tmp_path / "a" / "sixteen.png", 12)
    assert grey16.max() == pytest.approx(round(143 * 450 / 65535 * 255) / 255)
    # Transparency is composited onto black: a fully transparent pixel is black.
    assert picture_to_rgb8(tmp_path / "a" / "rgba.png", 12)[0, 0].tolist() == [0, 0, 0]


def test_a_corrupt_file_fails_with_its_path_or_is_skipped_with_a_count_when_asked(tmp_path, caplog):
    _make_folder(tmp_path, {"a": 4, "b": 4})
    bad = tmp_path / "b" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        load_image_folder(tmp_path, holdout=2, progress=False, cache=False)
    data = load_image_folder(tmp_path, holdout=2, progress=False, cache=False, skip_bad=True)
    assert len(data.train) + len(data.test) == 8
    assert "skipped 1 file" in caplog.text


def test_empty_and_single_class_folders_are_explained(tmp_path):
    _make_folder(tmp_path / "one", {"only": 3})
    with pytest.raises(ValueError, match="at least two"):
        load_image_folder(tmp_path / "one", progress=False)
    _make_folder(tmp_path / "two", {"a": 3, "b": 3})
    (tmp_path / "two" / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        load_image_folder(tmp_path / "two", progress=False)
    _make_folder(tmp_path / "three" / "train", {"a": 3, "b": 3})
    _make_folder(tmp_path / "three" / "test", {"a": 1, "zebra": 1})
    with pytest.raises(ValueError, match="zebra"):
        load_image_folder(tmp_path / "three", progress=False)


def test_decoded_folder_is_cached_and_refreshed_when_a_file_changes(tmp_path):
    _make_folder(tmp_path, {"a": 3, "b": 3})
    first = load_image_folder(tmp_path, holdout=2, progress=False)
    cached = list((Path(__import__("os").environ["ROBUSTCOMPRESS_CACHE"]) / "images").glob("*.npz"))
    assert cached
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(tmp_path / "a" / "000.png")
    changed = load_image_folder(tmp_path, holdout=2, progress=False)
    both = torch.cat([changed.train.tensors[0], changed.test.tensors[0]])
    assert not torch.equal(both, torch.cat([first.train.tensors[0], first.test.tensors[0]]))
    assert (both.flatten(1).amax(1) == 0).any()  # the new all-black picture is there


def test_big_folders_stream_from_disk(tmp_path):
    _make_folder(tmp_path, {"a": 3, "b": 3})
    data = load_image_folder(tmp_path, holdout=2, progress=False, max_memory_mb=0)
    assert not isinstance(data.train, PixelDataset)
    x, y = data.train[0]
    assert x.shape == (3, 12, 12) and x.dtype == torch.float32 and isinstance(y, int)


@pytest.mark.skipif(not CIFAR_JPG.is_dir(), reason="needs ../shared/data/cifar10_jpg (not in a user's clone)")
def test_real_cifar10_jpeg_folder_loads_with_counts_and_labels_from_folder_names(tmp_path):
    # The whole real test split (its held-back images make the class counts uneven) and the first 100 training
    # images of each class, linked into a folder of the same layout: decoding all 50,000 would only cost time.
    for split, keep in (("train", 100), ("test", None)):
        for folder in sorted((CIFAR_JPG / split).iterdir()):
            (tmp_path / split / folder.name).mkdir(parents=True)
            for image in sorted(folder.glob("*.jpg"))[:keep]:
                (tmp_path / split / folder.name / image.name).symlink_to(image)
    data = load_data(str(tmp_path), progress=False)
    assert data.class_names == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                                "truck"]
    assert (len(data.train), len(data.test)) == (1_000, 8_000) and data.input_size == 32
    assert torch.bincount(data.train.tensors[1], minlength=10).tolist() == [100] * 10
    test_counts = torch.bincount(data.test.tensors[1], minlength=10).tolist()
    assert test_counts == [len(list((CIFAR_JPG / "test" / c).glob("*.jpg"))) for c in data.class_names]
    first_cat = sorted((CIFAR_JPG / "train" / "cat").glob("*.jpg"))[0]
    index = int((data.train.tensors[1] == 3).nonzero()[0])
    assert np.array_equal(data.train.tensors[0][index].permute(1, 2, 0).numpy(), np.asarray(Image.open(first_cat)))


def _every_entry_point(picture, size: int = 12) -> list[np.ndarray]:
    """The picture as training data, the deploy runtime and the demo see it (HWC floats in [0, 1])."""
    from robustcompress.apps.handler import image_to_tensor
    from robustcompress_runtime.runtime import image_to_chw

    demo, _ = image_to_tensor(picture, size)
    return [picture_to_rgb8(picture, size).astype(np.float32) / 255, image_to_chw(picture, size).transpose(1, 2, 0),
            demo[0].permute(1, 2, 0).numpy()]


def test_32_bit_greyscale_beyond_16_bits_is_rescaled_by_every_entry_point_not_clipped(tmp_path):
    ramp = (np.arange(144, dtype=np.int64).reshape(12, 12) * (2**24 // 143)).astype(np.int32)
    path = tmp_path / "deep32.tif"
    Image.fromarray(ramp, "I").save(path)
    assert Image.open(path).mode == "I" and int(np.asarray(Image.open(path)).max()) > 2**23
    expected = np.rint(ramp / ramp.max() * 255) / 255  # divided by its own maximum: the ramp stays a ramp
    for picture in (str(path), Image.open(path)):
        for seen in _every_entry_point(picture):
            assert np.allclose(seen[..., 0], expected, atol=1e-6)
            assert len(np.unique(seen)) > 100  # not clipped to white


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_float_picture_with_nan_or_inf_is_refused_by_every_entry_point(tmp_path, bad):
    from robustcompress.apps.handler import image_to_tensor
    from robustcompress_runtime.runtime import main as runtime_main

    full = Image.fromarray(np.full((12, 12), bad, np.float32), "F")
    one = np.full((12, 12), 0.5, np.float32)
    one[3, 4] = bad
    for picture in (full, Image.fromarray(one, "F")):
        with pytest.raises(ValueError, match="NaN or infinite"):
            picture_to_rgb8(picture, 12)
        with pytest.raises(ValueError, match="NaN or infinite"):
            picture_to_array(picture, 12)
        with pytest.raises(ValueError, match="NaN or infinite"):
            image_to_tensor(picture, 12)
    path = tmp_path / "nan.tif"
    full.save(path)
    with pytest.raises(ValueError, match=f"{path}.*NaN or infinite"):
        picture_to_rgb8(path, 12)


def _all_images(data) -> torch.Tensor:
    return torch.cat([data.train.tensors[0], data.test.tensors[0]])


def test_a_file_replaced_with_the_same_name_size_and_mtime_is_decoded_again_not_served_stale(tmp_path, monkeypatch):
    import os

    import robustcompress.data.folders as folders

    _make_folder(tmp_path, {"a": 3, "b": 3}, suffix=".bmp")  # uncompressed: every 12x12 BMP has the same size
    first = load_image_folder(tmp_path, holdout=2, progress=False)
    target = tmp_path / "a" / "001.bmp"
    before = target.stat()
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(target)
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = target.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    changed = load_image_folder(tmp_path, holdout=2, progress=False)
    assert not torch.equal(_all_images(changed), _all_images(first))
    assert (_all_images(changed).flatten(1).amax(1) == 0).any()  # the new all-black picture is there
    # An untouched folder is read from the cache, not decoded again.
    monkeypatch.setattr(folders, "decode_files", lambda *a, **k: pytest.fail("decoded an unchanged folder again"))
    assert torch.equal(_all_images(load_image_folder(tmp_path, holdout=2, progress=False)), _all_images(changed))


def test_a_corrupt_image_cache_is_named_and_rebuilt(tmp_path, caplog):
    _make_folder(tmp_path / "photos", {"a": 3, "b": 3})
    first = load_image_folder(tmp_path / "photos", holdout=2, progress=False)
    cache = Path(__import__("os").environ["ROBUSTCOMPRESS_CACHE"]) / "images"
    for path in cache.glob("*.npz"):
        path.write_bytes(b"PK\x03\x04 truncated")
    again = load_image_folder(tmp_path / "photos", holdout=2, progress=False)
    assert torch.equal(_all_images(again), _all_images(first))
    warned = [r.getMessage() for r in caplog.records if "image cache" in r.getMessage()]
    assert warned and all("\n" not in m for m in warned)
    assert ".npz" in warned[0] and "cannot be read" in warned[0] and "decoded again" in warned[0]
    third = load_image_folder(tmp_path / "photos", holdout=2, progress=False)  # the rebuilt cache is good
    assert torch.equal(_all_images(third), _all_images(first))


@pytest.mark.parametrize("how", ["read-only folder", "a file in the way"])
def test_an_unwritable_image_cache_is_named_and_the_folder_still_loads(tmp_path, monkeypatch, caplog, how):
    import os

    _make_folder(tmp_path / "photos", {"a": 3, "b": 3})
    cache = tmp_path / "cache"
    if how == "read-only folder":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        (cache / "images").mkdir(parents=True)
        (cache / "images").chmod(0o555)
    else:
        cache.write_text("a file where the cache folder should be")
    monkeypatch.setenv("ROBUSTCOMPRESS_CACHE", str(cache))
    try:
        data = load_image_folder(tmp_path / "photos", holdout=2, progress=False)
    finally:
        if (cache / "images").is_dir():
            (cache / "images").chmod(0o755)
    assert len(data.train) + len(data.test) == 6
    warned = [r.getMessage() for r in caplog.records if "image cache" in r.getMessage()]
    assert warned and all("\n" not in m for m in warned)
    assert str(cache / "images") in warned[0] and "cannot be written" in warned[0]
    assert "ROBUSTCOMPRESS_CACHE" in warned[0] and "cache=False" in warned[0]


# -- one picture rule: every way a picture enters gives the same array ----------------------------------------------
def _save_folder_and_npz(root: Path, pictures: np.ndarray, labels: np.ndarray) -> tuple[Path, Path, list[Path]]:
    """The same pictures as an image folder (train/ and test/ alike, files in label order) and as an .npz."""
    paths = []
    for split in ("train", "test"):
        for i, (picture, label) in enumerate(zip(pictures, labels)):
            folder = root / "folder" / split / "ab"[label]
            folder.mkdir(parents=True, exist_ok=True)
            paths.append(folder / f"{i:03d}.png")
            Image.fromarray(picture).save(paths[-1])
    npz = root / "pictures.npz"
    np.savez(npz, x_train=pictures, y_train=labels, x_test=pictures, y_test=labels)
    return root / "folder", npz, paths[: len(pictures)]


@pytest.mark.parametrize("shape", [(37, 45, 3), (37, 45), (37, 45, 4)], ids=["rgb", "greyscale", "rgba"])
def test_the_same_odd_sized_picture_gives_identical_arrays_as_folder_npz_runtime_and_demo(tmp_path, shape):
    """A 45x37 picture resized to 32 px: bit for bit the same pixels in training (image folder or .npz), in the
    deploy runtime and in the demo, so a model is fed at deploy time what it was trained on (RGBA composited onto
    black by every entry)."""
    import robustcompress_runtime
    from robustcompress.apps.handler import image_to_tensor

    pictures = np.random.default_rng(0).integers(0, 256, (4, *shape), dtype=np.uint8)
    labels = np.array([0, 0, 1, 1])
    folder, npz, paths = _save_folder_and_npz(tmp_path, pictures, labels)
    seen = {
        "folder": torch.stack([x for x, _ in load_data(str(folder), 32, progress=False).train]),
        "npz": torch.stack([x for x, _ in load_data(str(npz), 32).train]),
        "runtime files": torch.from_numpy(robustcompress_runtime.load_images([str(p) for p in paths], 32)),
        "runtime arrays": torch.from_numpy(robustcompress_runtime.load_images(list(pictures), 32)),
        "demo files": torch.cat([image_to_tensor(str(p), 32)[0] for p in paths]),
        "demo arrays": torch.cat([image_to_tensor(picture, 32)[0] for picture in pictures]),
    }
    assert seen["folder"].shape == (4, 3, 32, 32) and seen["folder"].dtype == torch.float32
    for entry, x in seen.items():
        assert torch.equal(x, seen["folder"]), entry
    # Twice from the folder's cache gives the same pixels.
    assert torch.equal(torch.stack([x for x, _ in load_data(str(folder), 32, progress=False).train]), seen["folder"])


def test_float_pictures_are_resized_unquantised_by_the_same_rule_as_npz_runtime_and_demo_tensor(tmp_path):
    """Float images (e.g. adversarial examples) are not rounded to 8 bits: an .npz of floats, the runtime and a demo
    tensor resize them alike."""
    import robustcompress_runtime
    from robustcompress.apps.handler import image_to_tensor

    pictures = np.random.default_rng(1).random((4, 37, 45, 3), dtype=np.float32)
    npz = tmp_path / "floats.npz"
    np.savez(npz, x_train=pictures, y_train=np.array([0, 0, 1, 1]), x_test=pictures, y_test=np.array([0, 1, 0, 1]))
    from_npz = load_data(str(npz), 32).train.tensors[0]
    runtime = torch.from_numpy(robustcompress_runtime.load_images(pictures, 32))
    demo = torch.cat([image_to_tensor(torch.from_numpy(p).permute(2, 0, 1), 32)[0] for p in pictures])
    assert from_npz.shape == (4, 3, 32, 32)
    assert torch.equal(from_npz, runtime) and torch.equal(demo, runtime)


def test_pictures_already_at_the_target_size_are_not_resampled(tmp_path):
    """The quickstart's 8x8 digits and 32x32 CIFAR-style arrays are exactly their pixel values, as before."""
    from robustcompress.data.core import read_digits

    pictures = np.random.default_rng(2).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    npz = tmp_path / "cifar_like.npz"
    np.savez(npz, x_train=pictures, y_train=np.array([0, 0, 1, 1]), x_test=pictures, y_test=np.array([0, 1, 0, 1]))
    expected = torch.from_numpy(pictures).permute(0, 3, 1, 2).float() / 255.0
    assert torch.equal(load_data(str(npz)).train.tensors[0], expected)
    images, _ = read_digits()
    digits = load_data("digits", 8)
    raw = set((images.astype(np.float32) / 16.0).reshape(-1).tolist())
    assert set(digits.train.tensors[0].unique().tolist()) <= raw and digits.train.tensors[0].dtype == torch.float32
    assert digits.train.tensors[0].shape[1:] == (3, 8, 8)


@pytest.mark.parametrize("size", [12, 16])
def test_digits_at_another_size_are_resized_by_the_runtime_rule(size):
    import robustcompress_runtime
    from robustcompress.data.core import read_digits, stratified_split

    images, labels = read_digits()
    test_index = stratified_split(labels, 0.2, 0)[1][:16]
    digits = load_data("digits", size).test.tensors[0][:16]
    runtime = robustcompress_runtime.load_images(list(images[test_index].astype(np.float32) / 16.0), size)
    assert torch.equal(digits, torch.from_numpy(runtime))
