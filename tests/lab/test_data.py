"""Lab data loaders: IDX, npz, the generated organs set, segmentation folders; bad files rejected clearly."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from dropkit.lab import data as D


def write_idx(path, array: np.ndarray, *, gz: bool = True) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)


def make_idx_folder(folder, n_train=300, n_test=100, size=12, classes=10, seed=0):
    """Four IDX files; every training image carries its index in pixel (0, 0) and (0, 1) so splits can be traced."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    x_tr = rng.integers(0, 256, (n_train, size, size), dtype=np.uint8)
    x_tr[:, 0, 0], x_tr[:, 0, 1] = np.arange(n_train) % 256, np.arange(n_train) // 256
    y_tr = (np.arange(n_train) % classes).astype(np.uint8)
    x_te = rng.integers(0, 256, (n_test, size, size), dtype=np.uint8)
    y_te = (np.arange(n_test) % classes).astype(np.uint8)
    for key, arr in (("x_train", x_tr), ("y_train", y_tr), ("x_test", x_te), ("y_test", y_te)):
        write_idx(folder / D.IDX_FILES[key], arr)
    return x_tr, y_tr


def test_read_idx_roundtrip(tmp_path):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a.gz", arr)
    write_idx(tmp_path / "b", arr, gz=False)
    np.testing.assert_array_equal(D.read_idx(tmp_path / "a.gz"), arr)
    np.testing.assert_array_equal(D.read_idx(tmp_path / "b"), arr)


def test_read_idx_rejects_corrupt_gzip(tmp_path):
    good = gzip.compress(bytes([0, 0, 8, 1]) + struct.pack(">I", 4) + bytes(4))
    (tmp_path / "bad.gz").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="corrupt gzip"):
        D.read_idx(tmp_path / "bad.gz")


def test_read_idx_rejects_bad_magic_and_truncation(tmp_path):
    (tmp_path / "magic").write_bytes(b"PK\x03\x04rest")
    with pytest.raises(ValueError, match="magic"):
        D.read_idx(tmp_path / "magic")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + bytes(3))
    with pytest.raises(ValueError, match="truncated or corrupt"):
        D.read_idx(tmp_path / "short")
    with pytest.raises(FileNotFoundError):
        D.read_idx(tmp_path / "missing.gz")


def test_fashion_mnist_from_env_folder(tmp_path, monkeypatch):
    make_idx_folder(tmp_path / "fm")
    monkeypatch.setenv("DROPKIT_DATA", str(tmp_path / "fm"))
    assert D.find_fashion_mnist() == tmp_path / "fm"
    arrays = D.load_fashion_mnist()
    assert arrays["x_train"].shape == (300, 1, 12, 12) and arrays["y_test"].shape == (100,)


def test_missing_fashion_mnist_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("DROPKIT_DATA", str(tmp_path / "nothing"))
    monkeypatch.setattr(D, "FASHION_MNIST_DIR", tmp_path / "also-nothing")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        D.find_fashion_mnist()


def test_idx_folder_splits_are_stratified_disjoint_and_normalised(tmp_path):
    x_tr, _ = make_idx_folder(tmp_path / "fm")
    ds = D.load_dataset(str(tmp_path / "fm"), train_size=100, val_size=50, test_size=40, data_seed=3)
    assert ds.task == "classification" and ds.num_classes == 10
    assert ds.x_train.shape == (100, 1, 12, 12) and ds.x_train.dtype == torch.float32
    assert torch.bincount(ds.y_train, minlength=10).tolist() == [10] * 10  # 10 classes × 10, exactly stratified
    assert torch.bincount(ds.y_val, minlength=10).tolist() == [5] * 10
    assert torch.bincount(ds.y_test, minlength=10).tolist() == [4] * 10
    # trace images back by the index written into their first pixels: train and val never share an image
    def ids(x):  # (pixel (0,0), pixel (0,1)) is a unique id per raw image; normalisation is monotone
        return set(zip(x[:, 0, 0, 0].mul(1e4).round().tolist(), x[:, 0, 0, 1].mul(1e4).round().tolist()))

    ids_train, ids_val = ids(ds.x_train), ids(ds.x_val)
    assert ids_train.isdisjoint(ids_val) and len(ids_train) == 100
    assert abs(float(ds.x_train.mean())) < 1e-4 and abs(float(ds.x_train.std()) - 1) < 0.02
    again = D.load_dataset(str(tmp_path / "fm"), train_size=100, val_size=50, test_size=40, data_seed=3)
    assert torch.equal(again.x_train, ds.x_train)  # a data seed fixes the subsets
    other = D.load_dataset(str(tmp_path / "fm"), train_size=100, val_size=50, test_size=40, data_seed=4)
    assert not torch.equal(other.x_train, ds.x_train)


def test_stratified_prefix_keeps_class_shares():
    labels = np.repeat(np.arange(4), [40, 30, 20, 10])
    idx = D.stratified_indices(labels, 50, seed=0)
    counts = np.bincount(labels[idx], minlength=4)
    assert np.all(np.abs(counts - np.array([20, 15, 10, 5])) <= 1) and len(set(idx)) == 50
    with pytest.raises(ValueError, match="only 100 are available"):
        D.stratified_indices(labels, 101, seed=0)


def _npz(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def _good_arrays(n=40, size=10):
    rng = np.random.default_rng(0)
    return dict(x_train=rng.random((n, size, size), dtype=np.float32), y_train=np.arange(n) % 3,
                x_test=rng.random((12, size, size), dtype=np.float32), y_test=np.arange(12) % 3)


def test_npz_loads_and_splits(tmp_path):
    ds = D.load_dataset(_npz(tmp_path / "d.npz", **_good_arrays()), train_size=24, val_size=6)
    assert ds.x_train.shape == (24, 1, 10, 10) and ds.num_classes == 3 and len(ds.y_val) == 6


@pytest.mark.parametrize("change, message", [
    (lambda a: a.pop("y_test"), "missing key"),
    (lambda a: a.update(y_train=a["y_train"][:-1]), "expected"),
    (lambda a: a.update(x_train=a["x_train"][:, 0, 0]), "N×H×W"),
    (lambda a: a.update(x_train=a["x_train"][:, 0]), "differ in shape"),
    (lambda a: a.update(y_train=a["y_train"] - 1), "labels out of range"),
    (lambda a: a.update(y_test=a["y_test"] + 5), "labels out of range"),
    (lambda a: a.update(y_train=a["y_train"].astype(np.float32)), "integer labels"),
    (lambda a: a.update(x_test=np.zeros((12, 9, 9), np.float32)), "differ in shape"),
    (lambda a: a.update(x_train=np.full((40, 4, 4), 0.5, np.float32), x_test=np.zeros((12, 4, 4), np.float32)),
     "at least 8"),
])
def test_npz_rejects_bad_files(tmp_path, change, message):
    arrays = _good_arrays()
    change(arrays)
    with pytest.raises(ValueError, match=message):
        D.load_npz(_npz(tmp_path / "bad.npz", **arrays))


def test_npz_rejects_non_npz_and_missing(tmp_path):
    (tmp_path / "fake.npz").write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match="not a readable .npz"):
        D.load_npz(tmp_path / "fake.npz")
    with pytest.raises(FileNotFoundError):
        D.load_dataset(str(tmp_path / "nope.npz"))
    with pytest.raises(ValueError, match="unknown dataset"):
        D.load_dataset("cifar10")


def test_generated_organs_are_deterministic_and_structured():
    x, y = D.generate_organs(6, size=32, seed=1)
    x2, y2 = D.generate_organs(6, size=32, seed=1)
    assert x.shape == (6, 1, 32, 32) and y.shape == (6, 32, 32)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert set(np.unique(y)) <= {0, 1, 2} and (y == 1).any() and (x >= 0).all()
    # Poisson counts: intensities are multiples of 1/counts
    assert np.allclose(x * 30, np.rint(x * 30), atol=1e-4)
    # organs are brighter than background on average
    assert x[:, 0][y == 1].mean() > x[:, 0][y == 0].mean()
    x3, _ = D.generate_organs(6, size=32, seed=2)
    assert not np.array_equal(x, x3)
    with pytest.raises(ValueError, match="size"):
        D.generate_organs(2, size=4)


def test_organs_dataset_and_segmentation_folder(tmp_path):
    ds = D.load_dataset("organs", train_size=6, val_size=2, test_size=4, image_size=16)
    assert ds.task == "segmentation" and ds.num_classes == 3 and ds.y_train.shape == (6, 16, 16)
    (tmp_path / "seg" / "images").mkdir(parents=True)
    (tmp_path / "seg" / "masks").mkdir()
    x, y = D.generate_organs(10, size=16, seed=0)
    for i in range(10):
        np.save(tmp_path / "seg" / "images" / f"{i}.npy", x[i, 0])
        np.save(tmp_path / "seg" / "masks" / f"{i}.npy", y[i])
    folder = D.load_dataset(str(tmp_path / "seg"), val_size=1)
    assert folder.task == "segmentation" and len(folder.y_test) == 3 and len(folder.y_train) == 6
    (tmp_path / "seg" / "masks" / "3.npy").unlink()
    with pytest.raises(ValueError, match="no mask"):
        D.load_dataset(str(tmp_path / "seg"))


# ------------------------------------------------------------------------------ any shape: images, signals, features
def _shaped(shape_tail, n_train=40, n_test=12, **extra):
    rng = np.random.default_rng(0)
    return dict(x_train=rng.normal(3.0, 2.0, (n_train, *shape_tail)).astype(np.float32), y_train=np.arange(n_train) % 3,
                x_test=rng.normal(3.0, 2.0, (n_test, *shape_tail)).astype(np.float32), y_test=np.arange(n_test) % 3,
                **extra)


@pytest.mark.parametrize("tail, stored_kind, kind, input_shape", [
    ((10, 10), None, "image", (1, 10, 10)),
    ((2, 10, 10), None, "image", (2, 10, 10)),
    ((1, 40), None, "signal", (1, 40)),       # refused before as "images must be at least 8×8"
    ((3, 40), None, "signal", (3, 40)),
    ((40,), None, "features", (40,)),
    ((40,), "signal", "signal", (1, 40)),
    ((12, 40), "signal", "signal", (12, 40)),
    ((5,), None, "features", (5,)),
])
def test_npz_shapes_give_their_kind(tmp_path, tail, stored_kind, kind, input_shape):
    extra = {} if stored_kind is None else {"kind": np.array(stored_kind)}
    ds = D.load_dataset(_npz(tmp_path / "d.npz", **_shaped(tail, **extra)), train_size=24, val_size=6)
    assert ds.kind == kind and ds.input_shape == input_shape
    assert ds.x_train.shape == (24, *input_shape) and ds.x_test.shape == (12, *input_shape)
    assert ds.in_channels == input_shape[0] and ds.spatial_size == input_shape[1:]
    # normalised per channel (images, signals) or per feature (flat features) on the training subset
    axes = (0,) if kind == "features" else (0, *range(2, ds.x_train.ndim))
    assert torch.allclose(ds.x_train.mean(axes), torch.zeros(input_shape[0]), atol=1e-4)
    assert torch.allclose(ds.x_train.std(axes, unbiased=False), torch.ones(input_shape[0]), atol=1e-3)


def test_kind_argument_overrides_the_file_and_the_shape(tmp_path):
    path = _npz(tmp_path / "d.npz", **_shaped((12, 40)))
    assert D.load_dataset(path).kind == "image"  # C ≥ 8: read as a 12×40 image
    assert D.load_dataset(path, kind="signal").input_shape == (12, 40)


@pytest.mark.parametrize("tail, extra, kwargs, message", [
    ((40,), {"kind": np.array("image")}, {}, "cannot hold image data"),
    ((40,), {"kind": np.array("movie")}, {}, "kind must be one of"),
    ((40,), {"kind": np.array([1, 2])}, {}, "one string"),
    ((10, 10), {}, {"kind": "features"}, "cannot hold features data"),
    ((2, 4), {}, {"kind": "signal"}, "at least 8 long"),
    ((1, 40), {}, {"preprocess": "edges"}, "works on images"),
])
def test_npz_kind_errors_name_the_file_and_the_array(tmp_path, tail, extra, kwargs, message):
    path = _npz(tmp_path / "bad.npz", **_shaped(tail, **extra))
    with pytest.raises(ValueError, match=message) as err:
        D.load_dataset(path, **kwargs)
    assert "bad.npz" in str(err.value)


def test_per_position_labels_only_for_images(tmp_path):
    arrays = _shaped((1, 40))
    arrays.update(y_train=np.zeros((40, 1, 40), np.int64), y_test=np.zeros((12, 1, 40), np.int64))
    with pytest.raises(ValueError, match="images only"):
        D.load_npz(_npz(tmp_path / "seg1d.npz", **arrays))


# ----------------------------------------------------------------------------------------- ImageFolder layout
def _write_image(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _image_folder(root, classes=("cat", "dog"), per_class=6, size=(10, 10), rgb_at=None, odd_size_at=None):
    """Class k's images are bright in the k-th half, so labels can be traced through the split."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(classes):
        for i in range(per_class):
            h, w = (12, 14) if (k, i) == odd_size_at else size
            img = rng.integers(0, 60, (h, w), dtype=np.uint8)
            img[:, (w // 2) * k: (w // 2) * (k + 1)] += 150
            if (k, i) == rgb_at:
                img = np.stack([img, img // 2, img // 3], -1)
            _write_image(root / name / f"{i}.{'jpg' if i == 0 else 'png'}", img)
    return root


def test_image_folder_reads_classes_and_splits(tmp_path):
    root = _image_folder(tmp_path / "imgs")
    (root / "cat" / "notes.txt").write_text("not an image")  # skipped
    assert D.folder_layout(root) == "image_folder"
    arrays, names = D.load_image_folder(root)
    assert names == ("cat", "dog") and arrays["x_train"].shape[1:] == (1, 10, 10)
    assert len(arrays["y_train"]) + len(arrays["y_test"]) == 12
    assert set(arrays["y_test"].tolist()) == {0, 1}  # stratified test part
    # the bright half follows the label
    x = np.concatenate([arrays["x_train"], arrays["x_test"]]).astype(float)
    y = np.concatenate([arrays["y_train"], arrays["y_test"]])
    left = x[..., :5].mean((1, 2, 3)) > x[..., 5:].mean((1, 2, 3))
    assert np.array_equal(left, y == 0)
    ds = D.load_dataset(str(root), val_size=2)
    assert ds.class_names == ("cat", "dog") and ds.kind == "image" and ds.sizes()["val"] == 2


def test_image_folder_colour_and_sizes_are_made_common(tmp_path):
    root = _image_folder(tmp_path / "imgs", rgb_at=(1, 2), odd_size_at=(0, 3))
    with pytest.warns(UserWarning, match="1 of 12 images resized to 10×10"):
        arrays, _ = D.load_image_folder(root)
    assert arrays["x_train"].shape[1:] == (3, 10, 10)  # one colour image makes all RGB
    with pytest.warns(UserWarning, match="12 of 12 images resized to 16×16"):
        arrays, _ = D.load_image_folder(root, image_size=16)
    assert arrays["x_train"].shape[1:] == (3, 16, 16)


def test_image_folder_with_train_and_test_parts(tmp_path):
    _image_folder(tmp_path / "split" / "train", per_class=5)
    _image_folder(tmp_path / "split" / "test", per_class=2)
    arrays, names = D.load_image_folder(tmp_path / "split")
    assert len(arrays["y_train"]) == 10 and len(arrays["y_test"]) == 4 and names == ("cat", "dog")
    _image_folder(tmp_path / "split" / "test", classes=("cow",), per_class=1)
    with pytest.raises(ValueError, match="differ from the training classes"):
        D.load_image_folder(tmp_path / "split")


def test_image_folder_errors(tmp_path):
    root = _image_folder(tmp_path / "one", classes=("only",))
    with pytest.raises(ValueError, match="at least 2 class sub-folders"):
        D.load_image_folder(root)
    root = _image_folder(tmp_path / "empty")
    (root / "bird").mkdir()
    (root / "bird" / "x.gif").write_bytes(b"GIF89a")
    with pytest.raises(ValueError, match="bird: class folder holds no"):
        D.load_image_folder(root)
    root = _image_folder(tmp_path / "broken")
    (root / "dog" / "9.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="9.png: not a readable image"):
        D.load_image_folder(root)
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="ImageFolder layout"):
        D.load_dataset(str(tmp_path / "plain"))
    (tmp_path / "seg" / "images").mkdir(parents=True)  # images/ without masks/: a segmentation folder, incomplete
    with pytest.raises(FileNotFoundError, match="masks/"):
        D.load_dataset(str(tmp_path / "seg"))


def test_wide_grayscale_keeps_its_range(tmp_path):
    img = (np.arange(100, dtype=np.uint16).reshape(10, 10) * 600)
    _write_image(tmp_path / "w.png", img)
    read = D._read_image(tmp_path / "w.png")
    assert read.shape == (1, 10, 10) and read.max() == 99 * 600  # not clipped at 255
