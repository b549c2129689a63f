"""The lab's data: Fashion-MNIST from IDX files, any ``.npz``, a generated medical-like segmentation set and a
folder of images and masks. Nothing is ever downloaded.

Every loader returns a :class:`Dataset`: float32 images (N, C, H, W) normalised with the training subset's
per-channel mean and std, int64 targets (class labels (N,), or per-pixel labels (N, H, W) for segmentation), and
three disjoint splits. The training subset and the validation split are both drawn, stratified by class, from the
file's training part with a fixed ``data_seed``, so every run of a comparison sees the same images whatever its
own seed; the validation split is carved from the training images *not* in the subset, so ``train_size`` is the
number of images the model learns from.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "Dataset",
    "FASHION_MNIST_DIR",
    "IDX_FILES",
    "read_idx",
    "find_fashion_mnist",
    "load_fashion_mnist",
    "load_npz",
    "stratified_indices",
    "generate_organs",
    "load_segmentation_folder",
    "load_dataset",
    "DATASET_NAMES",
]

#: where the Debian package ``dataset-fashion-mnist`` installs the four files
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
#: names ``load_dataset`` accepts besides a path
DATASET_NAMES = ("fashion_mnist", "organs")
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_MIN_SIZE = 8


@dataclass
class Dataset:
    """Three splits ready for training.

    Attributes:
        name: what was loaded (``"fashion_mnist"``, a path, ``"organs"``).
        task: ``"classification"`` or ``"segmentation"``.
        num_classes: number of classes (segmentation: including the background class 0).
        x_*: float32 (N, C, H, W); y_*: int64 (N,) or (N, H, W).
        class_names: optional names of the classes.
    """

    name: str
    task: str
    num_classes: int
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_names: tuple[str, ...] = ()

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.x_train.shape[2]), int(self.x_train.shape[3])

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


# ----------------------------------------------------------------------------------------------- IDX files
def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzipped when its name ends in ``.gz``) into an array of its declared shape.

    Raises:
        FileNotFoundError: no such file.
        ValueError: corrupt gzip, a bad magic number, or a payload whose size disagrees with the header.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file {str(path)!r} does not exist")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{path}: corrupt gzip file ({err}); re-install or re-copy it") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or not 1 <= raw[3] <= 4:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'}); expected "
                         "00 00 <type> <ndim> as in the MNIST format")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: IDX header declares shape {shape} ({expected} bytes) but the payload has "
                         f"{len(raw) - header} bytes; the file is truncated or corrupt")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def find_fashion_mnist(root: str | os.PathLike | None = None) -> Path:
    """The folder holding the four Fashion-MNIST IDX files: ``root``, else ``$DROPKIT_DATA``, else the Debian
    package's folder. Raises ``FileNotFoundError`` saying how to get the files."""
    candidates = [Path(root)] if root is not None else []
    if root is None and os.environ.get("DROPKIT_DATA"):
        env = Path(os.environ["DROPKIT_DATA"])
        candidates += [env, env / "fashion-mnist", env / "fashion_mnist"]
    if root is None:
        candidates.append(FASHION_MNIST_DIR)
    for folder in candidates:
        if all((folder / f).is_file() for f in IDX_FILES.values()):
            return folder
    looked = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"Fashion-MNIST not found (looked in {looked}). Install it with `apt-get install dataset-fashion-mnist` "
        f"(as root; `make lab` does this), or put the four files {', '.join(IDX_FILES.values())} in a folder and "
        "set DROPKIT_DATA to it, or pass --data FILE.npz.")


def load_fashion_mnist(root: str | os.PathLike | None = None) -> dict[str, np.ndarray]:
    """The four raw arrays (uint8 images N×28×28, uint8 labels) of Fashion-MNIST, checked for consistency."""
    folder = find_fashion_mnist(root)
    arrays = {key: read_idx(folder / name) for key, name in IDX_FILES.items()}
    return _check_arrays(arrays, str(folder), task="classification")


# ----------------------------------------------------------------------------------------------- npz files
def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Arrays ``x_train, y_train, x_test, y_test`` of an ``.npz`` file (images N×H×W or N×C×H×W, integer labels,
    or per-pixel integer masks N×H×W for a segmentation set), checked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            found = list(npz.files) if hasattr(npz, "files") else None
            arrays = {k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test") if found and k in found}
    except Exception as err:  # zipfile.BadZipFile, OSError, pickle refusals: all "not a readable npz"
        raise ValueError(f"{path}: not a readable .npz file ({type(err).__name__}: {err})") from None
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise ValueError(f"{path}: missing key(s) {missing}; an .npz for the lab needs x_train, y_train, x_test, "
                         f"y_test (found {sorted(found or [])})")
    task = "segmentation" if arrays["y_train"].ndim == 3 else "classification"
    return _check_arrays(arrays, str(path), task=task)


def _check_arrays(arrays: dict[str, np.ndarray], source: str, *, task: str) -> dict[str, np.ndarray]:
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim not in (3, 4):
            raise ValueError(f"{source}: x_{split} must be N×H×W or N×C×H×W images, got shape {x.shape}")
        if not (np.issubdtype(x.dtype, np.number) and not np.issubdtype(x.dtype, np.complexfloating)):
            raise ValueError(f"{source}: x_{split} must hold real numbers, got dtype {x.dtype}")
        if x.ndim == 3:
            x = arrays[f"x_{split}"] = x[:, None]
        if x.shape[1] > 16:
            raise ValueError(f"{source}: x_{split} has {x.shape[1]} channels; images must be N×C×H×W with "
                             "C ≤ 16 (channels-last N×H×W×C is not accepted: transpose it first)")
        if min(x.shape[2:]) < _MIN_SIZE:
            raise ValueError(f"{source}: images must be at least {_MIN_SIZE}×{_MIN_SIZE}, got {x.shape[2:]}")
        if len(x) == 0:
            raise ValueError(f"{source}: x_{split} is empty")
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{source}: y_{split} must hold integer labels, got dtype {y.dtype}")
        want = (len(x),) if task == "classification" else (len(x), *x.shape[2:])
        if y.shape != want:
            raise ValueError(f"{source}: y_{split} has shape {y.shape}, expected {want} to match x_{split} "
                             f"{x.shape}")
        if not np.isfinite(x).all():
            raise ValueError(f"{source}: x_{split} holds NaN or infinite values")
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise ValueError(f"{source}: train images {arrays['x_train'].shape[1:]} and test images "
                         f"{arrays['x_test'].shape[1:]} differ in shape")
    lo = min(int(arrays["y_train"].min()), int(arrays["y_test"].min()))
    num_classes = int(arrays["y_train"].max()) + 1
    if lo < 0:
        raise ValueError(f"{source}: labels out of range: found {lo}; labels must be 0 … num_classes-1")
    if int(arrays["y_test"].max()) >= num_classes:
        raise ValueError(f"{source}: labels out of range: y_test holds {int(arrays['y_test'].max())} but y_train "
                         f"only has classes 0 … {num_classes - 1}")
    if num_classes < 2:
        raise ValueError(f"{source}: need at least 2 classes, y_train holds only {num_classes}")
    return arrays


# ------------------------------------------------------------------------------------------ subsets, splits
def stratified_indices(labels: np.ndarray, n: int, *, seed: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """``n`` indices drawn without replacement so that each class keeps its share of ``labels`` (±1 image).

    Each class's members are shuffled; the k-th of a class of size m gets the key (k + u)/m with u ~ U(0, 1), and
    the n smallest keys win: an even interleave of classes, so any prefix is stratified.
    """
    if n == 0:  # e.g. no validation split: nothing to draw, even from an empty pool
        return np.empty(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    pool = np.arange(len(labels))
    if exclude is not None and len(exclude):
        pool = np.setdiff1d(pool, exclude, assume_unique=False)
    if n > len(pool):
        raise ValueError(f"asked for {n} images but only {len(pool)} are available")
    pool = rng.permutation(pool)
    lab = labels[pool]
    order = np.argsort(lab, kind="stable")
    sorted_lab = lab[order]
    starts = np.searchsorted(sorted_lab, sorted_lab, side="left")
    counts = np.bincount(sorted_lab - sorted_lab.min())[sorted_lab - sorted_lab.min()]
    rank = np.arange(len(sorted_lab)) - starts
    keys = np.empty(len(pool))
    keys[order] = (rank + rng.random(len(pool))) / counts
    return np.sort(pool[np.argsort(keys, kind="stable")[:n]])


def _to_tensors(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    x = (x.astype(np.float32) - mean) / std
    return torch.from_numpy(np.ascontiguousarray(x))


PREPROCESSING = (None, "edges")


def _preprocess(x: np.ndarray, preprocess: str | None) -> np.ndarray:
    """Apply a preprocessing transform to raw images (N, C, H, W) before normalisation.

    ``"edges"``: the dental-imaging recipe (``dropkit.transforms.edges``: erosion, Gaussian blur, Canny) on images
    scaled to [0, 1] (uint8 by 1/255, other data by their own min and max).
    """
    if preprocess is None:
        return x
    from dropkit.transforms import edges

    if x.dtype == np.uint8:
        unit = x.astype(np.float32) / 255.0
    else:
        lo, hi = float(x.min()), float(x.max())
        unit = ((x - lo) / max(hi - lo, 1e-12)).astype(np.float32)
    return edges(torch.from_numpy(np.ascontiguousarray(unit))).numpy()


def _split(arrays: dict[str, np.ndarray], name: str, task: str, *, train_size: int | None, val_size: int | None,
           test_size: int | None, data_seed: int, class_names: tuple[str, ...] = (),
           preprocess: str | None = None) -> Dataset:
    x_tr, y_tr, x_te, y_te = arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"]
    strat_tr = y_tr if task == "classification" else np.zeros(len(y_tr), dtype=np.int64)
    strat_te = y_te if task == "classification" else np.zeros(len(y_te), dtype=np.int64)
    n_pool = len(y_tr)
    if val_size is None:  # a tenth of the training images, at most 500
        val_size = min(500, max(1, n_pool // 10))
    if train_size is None:
        train_size = n_pool - val_size
    if train_size < 1 or val_size < 0 or train_size + val_size > n_pool:
        raise ValueError(f"{name}: train_size ({train_size}) + val_size ({val_size}) must be ≥ 1 and at most the "
                         f"{n_pool} training images of the data")
    train_idx = stratified_indices(strat_tr, train_size, seed=data_seed)
    val_idx = stratified_indices(strat_tr, val_size, seed=data_seed + 1, exclude=train_idx)
    if test_size is None or test_size >= len(y_te):
        test_idx = np.arange(len(y_te))
    else:
        if test_size < 1:
            raise ValueError(f"{name}: test_size must be ≥ 1, got {test_size}")
        test_idx = stratified_indices(strat_te, test_size, seed=data_seed + 2)
    if preprocess is not None:  # only the selected images: the transform is per image, the pool may be large
        x_tr = x_tr.copy() if x_tr.dtype != np.uint8 else x_tr.astype(np.float32)
        x_te = x_te.copy() if x_te.dtype != np.uint8 else x_te.astype(np.float32)
        raw_tr, raw_te = arrays["x_train"], arrays["x_test"]
        picked = np.concatenate([train_idx, val_idx])
        x_tr[picked] = _preprocess(raw_tr[picked], preprocess)
        x_te[test_idx] = _preprocess(raw_te[test_idx], preprocess)
    xt = x_tr[train_idx].astype(np.float64)
    mean = xt.mean(axis=(0, 2, 3), keepdims=True)[0].astype(np.float32)
    std = np.maximum(xt.std(axis=(0, 2, 3), keepdims=True)[0], 1e-6).astype(np.float32)
    num_classes = int(max(y_tr.max(), y_te.max())) + 1
    return Dataset(
        name=name, task=task, num_classes=num_classes,
        x_train=_to_tensors(x_tr[train_idx], mean, std), y_train=torch.from_numpy(y_tr[train_idx].astype(np.int64)),
        x_val=_to_tensors(x_tr[val_idx], mean, std), y_val=torch.from_numpy(y_tr[val_idx].astype(np.int64)),
        x_test=_to_tensors(x_te[test_idx], mean, std), y_test=torch.from_numpy(y_te[test_idx].astype(np.int64)),
        class_names=class_names,
    )


# --------------------------------------------------------------------------- generated segmentation set
def generate_organs(n: int, *, size: int = 64, seed: int = 0, counts: float = 30.0) -> tuple[np.ndarray, np.ndarray]:
    """A procedurally generated, medical-like segmentation set: ``n`` images (N, 1, size, size) float32 and
    masks (N, size, size) int64 with classes 0 background, 1 organ, 2 lesion.

    Each image holds one organ-like shape (an ellipse whose radius wobbles with a few random harmonics, rotated
    and placed at random) over a smooth background with a decoy blob of similar brightness; about two thirds of
    the organs carry a darker lesion. Intensities are turned into photon counts and Poisson-sampled
    (``counts`` photons at unit intensity), as in a low-dose scan. Few images of this kind make a U-Net overfit.
    """
    if n < 1 or size < _MIN_SIZE:
        raise ValueError(f"generate_organs: n must be ≥ 1 and size ≥ {_MIN_SIZE}, got n={n}, size={size}")
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    yy, xx = yy[None], xx[None]

    def blob(cy, cx, ry, rx, angle, harm_amp, harm_phase):
        dy, dx = yy - cy[:, None, None], xx - cx[:, None, None]
        c, s = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
        u, v = c * dx + s * dy, -s * dx + c * dy
        r = np.sqrt((u / rx[:, None, None]) ** 2 + (v / ry[:, None, None]) ** 2)
        theta = np.arctan2(v, u)
        k = np.arange(2, 2 + harm_amp.shape[1])[None, :, None, None]
        wobble = 1 + (harm_amp[:, :, None, None] * np.cos(k * theta[:, None] + harm_phase[:, :, None, None])).sum(1)
        return r < wobble

    u = lambda lo, hi, shape=(n,): rng.uniform(lo, hi, shape)  # noqa: E731
    organ = blob(u(-0.25, 0.25), u(-0.25, 0.25), u(0.3, 0.5), u(0.25, 0.45), u(0, np.pi),
                 u(0, 0.12, (n, 3)), u(0, 2 * np.pi, (n, 3)))
    has_lesion = rng.random(n) < 0.67
    lesion = blob(u(-0.2, 0.2), u(-0.2, 0.2), u(0.07, 0.16), u(0.07, 0.16), u(0, np.pi),
                  u(0, 0.2, (n, 2)), u(0, 2 * np.pi, (n, 2))) & organ & has_lesion[:, None, None]
    decoy = blob(u(-0.8, 0.8), u(-0.8, 0.8), u(0.1, 0.25), u(0.1, 0.25), u(0, np.pi),
                 u(0, 0.1, (n, 2)), u(0, 2 * np.pi, (n, 2))) & ~organ
    gy, gx = u(-0.2, 0.2), u(-0.2, 0.2)
    intensity = 0.35 + gy[:, None, None] * yy + gx[:, None, None] * xx
    intensity = intensity + organ * u(0.35, 0.55)[:, None, None] * (1 + 0.15 * np.sin(7 * xx + 5 * yy))
    intensity = intensity + decoy * u(0.25, 0.5)[:, None, None]
    intensity = intensity - lesion * u(0.25, 0.4)[:, None, None]
    photons = rng.poisson(np.clip(intensity, 0.02, None) * counts)
    images = (photons / counts).astype(np.float32)[:, None]
    masks = organ.astype(np.int64) + lesion.astype(np.int64)
    return images, masks


def load_segmentation_folder(path: str | os.PathLike, *, test_fraction: float = 0.3,
                             seed: int = 0) -> dict[str, np.ndarray]:
    """A folder ``path/images/*`` with matching ``path/masks/*`` (same file names; ``.png`` or ``.npy``; masks hold
    integer class ids, or 0/255 for binary PNGs), split into train and test parts by ``test_fraction``."""
    path = Path(path)
    img_dir, mask_dir = path / "images", path / "masks"
    if not img_dir.is_dir() or not mask_dir.is_dir():
        raise FileNotFoundError(f"{path}: a segmentation folder needs the sub-folders images/ and masks/")
    names = sorted(p.name for p in img_dir.iterdir() if p.suffix.lower() in (".png", ".npy"))
    if len(names) < 2:
        raise ValueError(f"{img_dir}: need at least 2 images (.png or .npy), found {len(names)}")
    missing = [nm for nm in names if not (mask_dir / nm).is_file()]
    if missing:
        raise ValueError(f"{mask_dir}: no mask for {missing[:5]}{' …' if len(missing) > 5 else ''}")

    def read(p: Path) -> np.ndarray:
        if p.suffix.lower() == ".npy":
            return np.load(p, allow_pickle=False)
        import matplotlib.image as mpimg

        return np.asarray(mpimg.imread(p))

    images, masks = [], []
    for nm in names:
        img, mask = read(img_dir / nm), read(mask_dir / nm)
        if img.ndim == 3:  # H×W×C from PNG: to C×H×W, dropping alpha
            img = np.moveaxis(img[..., :3] if img.shape[-1] == 4 else img, -1, 0)
        else:
            img = img[None]
        if mask.ndim == 3:
            mask = mask[..., 0]
        if np.issubdtype(mask.dtype, np.floating):  # PNG read as floats in [0, 1]
            mask = np.rint(mask * 255)
        mask = mask.astype(np.int64)
        if set(np.unique(mask)) <= {0, 255}:
            mask = mask // 255
        images.append(img.astype(np.float32))
        masks.append(mask)
    shapes = {im.shape for im in images}
    if len(shapes) != 1 or any(m.shape != images[0].shape[1:] for m in masks):
        raise ValueError(f"{path}: every image and mask must have the same size; found images {sorted(shapes)}")
    x, y = np.stack(images), np.stack(masks)
    order = np.random.default_rng(seed).permutation(len(x))
    n_test = max(1, int(round(test_fraction * len(x))))
    arrays = {"x_train": x[order[n_test:]], "y_train": y[order[n_test:]],
              "x_test": x[order[:n_test]], "y_test": y[order[:n_test]]}
    return _check_arrays(arrays, str(path), task="segmentation")


# --------------------------------------------------------------------------------------------- dispatcher
def load_dataset(name_or_path: str, *, train_size: int | None = None, val_size: int | None = None,
                 test_size: int | None = None, data_seed: int = 0, image_size: int = 64,
                 preprocess: str | None = None) -> Dataset:
    """Load ``"fashion_mnist"``, ``"organs"`` (generated segmentation set), an ``.npz`` file, a folder of IDX files
    or a segmentation folder (``images/`` + ``masks/``) and split it.

    Args:
        train_size: images to train on (a stratified subset); None = all but the validation split.
        val_size: validation images, carved from the training images not in the subset; None = a tenth of the
            training images, at most 500 (``organs``: 8).
        test_size: a stratified subset of the test images; None = all.
        data_seed: fixes the subsets (the same for every run of a comparison).
        image_size: side of the generated ``organs`` images.
        preprocess: None or ``"edges"`` (the dental-imaging recipe's edge maps, applied before normalisation).
    """
    if not isinstance(name_or_path, str) or not name_or_path:
        raise TypeError(f"data must be a dataset name {DATASET_NAMES} or a path, got {name_or_path!r}")
    key = name_or_path.lower().replace("-", "_")
    if preprocess not in PREPROCESSING:
        raise ValueError(f"preprocess must be one of {PREPROCESSING}, got {preprocess!r}")
    common = dict(train_size=train_size, val_size=val_size, test_size=test_size, data_seed=data_seed,
                  preprocess=preprocess)
    if key == "fashion_mnist":
        return _split(load_fashion_mnist(), "fashion_mnist", "classification",
                      class_names=FASHION_MNIST_CLASSES, **common)
    if key == "organs":
        n_train = 24 if train_size is None else train_size
        val_size = 8 if val_size is None else val_size
        n_test = 64 if test_size is None else test_size
        x, y = generate_organs(n_train + val_size + n_test, size=image_size, seed=1000 + data_seed)
        arrays = {"x_train": x[: n_train + val_size], "y_train": y[: n_train + val_size],
                  "x_test": x[n_train + val_size:], "y_test": y[n_train + val_size:]}
        return _split(arrays, "organs", "segmentation",
                      class_names=("background", "organ", "lesion"),
                      **{**common, "train_size": n_train, "val_size": val_size, "test_size": None})
    path = Path(name_or_path)
    if path.suffix == ".npz":
        arrays = load_npz(path)
        task = "segmentation" if arrays["y_train"].ndim == 3 else "classification"
        return _split(arrays, str(path), task, **common)
    if path.is_dir():
        if (path / "images").is_dir():
            return _split(load_segmentation_folder(path, seed=data_seed), str(path), "segmentation", **common)
        if all((path / f).is_file() for f in IDX_FILES.values()):
            return _split(load_fashion_mnist(path), str(path), "classification", **common)
        raise ValueError(f"{path}: a data folder must hold the four IDX files {list(IDX_FILES.values())} or the "
                         "sub-folders images/ and masks/")
    if not path.exists() and os.sep not in name_or_path and "." not in name_or_path:
        raise ValueError(f"unknown dataset {name_or_path!r}; use one of {DATASET_NAMES}, an .npz file or a folder")
    raise FileNotFoundError(f"data {name_or_path!r} does not exist (expected {DATASET_NAMES}, an .npz file or a folder)")
