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
    (lambda a: a.update(x_train=a["x_train"][:, 0]), "N×H×W"),
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
