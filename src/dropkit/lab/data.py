"""The lab's data: Fashion-MNIST from IDX files, any ``.npz``, a folder of class sub-folders (ImageFolder layout), a
generated medical-like segmentation set and a folder of images and masks. Nothing is ever downloaded.

Every loader returns a :class:`Dataset`: float32 inputs normalised with the training subset's per-channel (for
flat features: per-feature) mean and std, int64 targets (class labels (N,), or per-pixel labels (N, H, W) for
segmentation), and three disjoint splits. Inputs come in one of three kinds, told by :attr:`Dataset.kind`:

- ``"image"``: (N, C, H, W), from an x of shape (N, H, W) or (N, C, H, W), at least 8×8;
- ``"signal"``: (N, C, L), from an x of shape (N, C, L) or, with ``kind="signal"``, (N, L); at least 8 long;
- ``"features"``: (N, F), from an x of shape (N, F).

A 3-D x is ambiguous: it is read as signals when C < 8 ≤ L (no image is less than 8 rows tall), else as images
(N, H, W). A 2-D x is read as features. An entry ``kind`` in the ``.npz`` (``"image"``, ``"signal"`` or
``"features"``) settles either case.

The training subset and the validation split are both drawn, stratified by class, from the file's training part
with a fixed ``data_seed``, so every run of a comparison sees the same inputs whatever its own seed; the validation
split is carved from the training inputs *not* in the subset, so ``train_size`` is the number of inputs the model
learns from.
"""

from __future__ import annotations

import gzip
import os
import struct
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dropkit.lab.config import PREPROCESSING

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
    "load_image_folder",
    "folder_layout",
    "kind_of_shape",
    "DATA_KINDS",
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
#: what the inputs of a data set may be (see the module docstring)
DATA_KINDS = ("image", "signal", "features")
_KIND_SHAPES = {"image": {3: "N×H×W", 4: "N×C×H×W"}, "signal": {2: "N×L", 3: "N×C×L"}, "features": {2: "N×F"}}


@dataclass
class Dataset:
    """Three splits ready for training.

    Attributes:
        name: what was loaded (``"fashion_mnist"``, a path, ``"organs"``).
        task: ``"classification"`` or ``"segmentation"``.
        num_classes: number of classes (segmentation: including the background class 0).
        x_*: float32 images (N, C, H, W), signals (N, C, L) or features (N, F); y_*: int64 (N,) or (N, H, W).
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
    def kind(self) -> str:
        """``"image"``, ``"signal"`` or ``"features"``, from the rank of the inputs."""
        return kind_of_shape(tuple(self.x_train.shape[1:]))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One input's shape without the batch dimension: (C, H, W), (C, L) or (F,)."""
        return tuple(int(s) for s in self.x_train.shape[1:])

    @property
    def in_channels(self) -> int:
        """C of an image or signal; F of flat features."""
        return int(self.x_train.shape[1])

    @property
    def spatial_size(self) -> tuple[int, ...]:
        """(H, W) of an image, (L,) of a signal, () of flat features."""
        return tuple(int(s) for s in self.x_train.shape[2:])

    @property
    def image_size(self) -> tuple[int, ...]:
        """The same as :attr:`spatial_size` (the name predates signals and features)."""
        return self.spatial_size

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.y_train), "val": len(self.y_val), "test": len(self.y_test)}


def kind_of_shape(input_shape: tuple[int, ...]) -> str:
    """The kind of data one input of shape (C, H, W), (C, L) or (F,) is."""
    try:
        return {3: "image", 2: "signal", 1: "features"}[len(input_shape)]
    except KeyError:
        raise ValueError(f"an input must be (C, H, W), (C, L) or (F,), got shape {input_shape}") from None


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
def load_npz(path: str | os.PathLike, *, kind: str | None = None) -> dict[str, np.ndarray]:
    """Arrays ``x_train, y_train, x_test, y_test`` of an ``.npz`` file, checked, x in its canonical shape.

    x holds images (N, H, W) or (N, C, H, W), signals (N, C, L) or (N, L), or features (N, F) (see the module
    docstring for how the kind is told); y holds integer labels (N,), or per-pixel integer masks (N, H, W) for a
    segmentation set of images.

    Args:
        kind: ``"image"``, ``"signal"`` or ``"features"``; None = the file's ``kind`` entry, else inferred.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file {str(path)!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            found = list(npz.files) if hasattr(npz, "files") else None
            arrays = {k: npz[k] for k in ("x_train", "y_train", "x_test", "y_test") if found and k in found}
            stored_kind = npz["kind"] if found and "kind" in found else None
    except Exception as err:  # zipfile.BadZipFile, OSError, pickle refusals: all "not a readable npz"
        raise ValueError(f"{path}: not a readable .npz file ({type(err).__name__}: {err})") from None
    missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in arrays]
    if missing:
        raise ValueError(f"{path}: missing key(s) {missing}; an .npz for the lab needs x_train, y_train, x_test, "
                         f"y_test (found {sorted(found or [])})")
    if kind is None and stored_kind is not None:
        if stored_kind.ndim != 0 or stored_kind.dtype.kind not in "US":
            raise ValueError(f"{path}: the entry 'kind' must be one string {DATA_KINDS}, got {stored_kind!r}")
        kind = str(stored_kind)
    task = "segmentation" if arrays["y_train"].ndim == 3 else "classification"
    return _check_arrays(arrays, str(path), task=task, kind=kind)


def _canonical_x(x: np.ndarray, source: str, name: str, kind: str | None) -> np.ndarray:
    """x as (N, C, H, W) images, (N, C, L) signals or (N, F) features; refuses what fits none."""
    if kind is not None and kind not in DATA_KINDS:
        raise ValueError(f"{source}: kind must be one of {DATA_KINDS}, got {kind!r}")
    accepted = "images N×H×W or N×C×H×W, signals N×C×L (or N×L with kind='signal'), or features N×F"
    if x.ndim not in (2, 3, 4):
        raise ValueError(f"{source}: {name} must hold {accepted}; got shape {x.shape}")
    if kind is None:
        if x.ndim == 4:
            kind = "image"
        elif x.ndim == 3:
            kind = "signal" if x.shape[1] < _MIN_SIZE <= x.shape[2] else "image"
        else:
            kind = "features"
    if x.ndim not in _KIND_SHAPES[kind]:
        raise ValueError(f"{source}: {name} of shape {x.shape} cannot hold {kind} data, which are "
                         f"{' or '.join(_KIND_SHAPES[kind].values())}")
    if kind == "image":
        x = x[:, None] if x.ndim == 3 else x
        if x.shape[1] > 16:
            raise ValueError(f"{source}: {name} has {x.shape[1]} channels; images must be N×C×H×W with "
                             "C ≤ 16 (channels-last N×H×W×C is not accepted: transpose it first)")
        if min(x.shape[2:]) < _MIN_SIZE:
            raise ValueError(f"{source}: images must be at least {_MIN_SIZE}×{_MIN_SIZE}, got {x.shape[2:]} in "
                             f"{name} {x.shape} (a 3-D x is read as signals N×C×L only when C < {_MIN_SIZE} ≤ L; "
                             "an entry kind='signal' in the file says so explicitly)")
    elif kind == "signal":
        x = x[:, None] if x.ndim == 2 else x
        if x.shape[2] < _MIN_SIZE:
            raise ValueError(f"{source}: signals must be at least {_MIN_SIZE} long, got length {x.shape[2]} in "
                             f"{name} {x.shape} (channels-last N×L×C is not accepted: transpose it first)")
    return x


def _check_arrays(arrays: dict[str, np.ndarray], source: str, *, task: str,
                  kind: str | None = None) -> dict[str, np.ndarray]:
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if not (np.issubdtype(x.dtype, np.number) and not np.issubdtype(x.dtype, np.complexfloating)):
            raise ValueError(f"{source}: x_{split} must hold real numbers, got dtype {x.dtype}")
        x = arrays[f"x_{split}"] = _canonical_x(x, source, f"x_{split}", kind)
        if len(x) == 0:
            raise ValueError(f"{source}: x_{split} is empty")
        if not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{source}: y_{split} must hold integer labels, got dtype {y.dtype}")
        if task == "segmentation" and x.ndim != 4:
            raise ValueError(f"{source}: y_{split} holds per-position labels {y.shape}, which are supported for "
                             f"images only; x_{split} {x.shape} holds {kind_of_shape(x.shape[1:])} data")
        want = (len(x),) if task == "classification" else (len(x), *x.shape[2:])
        if y.shape != want:
            raise ValueError(f"{source}: y_{split} has shape {y.shape}, expected {want} to match x_{split} "
                             f"{x.shape}")
        if not np.isfinite(x).all():
            raise ValueError(f"{source}: x_{split} holds NaN or infinite values")
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise ValueError(f"{source}: train inputs {arrays['x_train'].shape[1:]} and test inputs "
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


def _preprocess(x: np.ndarray, preprocess: str | None) -> np.ndarray:
    """Apply a preprocessing transform to raw images (N, C, H, W) before normalisation.

    ``"edges"``: the dental-imaging recipe (``dropkit.lab.recipes.dental.edges``: erosion, Gaussian blur, Canny) on images
    scaled to [0, 1] (uint8 by 1/255, other data by their own min and max).
    """
    if preprocess is None:
        return x
    from dropkit.lab.recipes.dental import edges

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
    if preprocess is not None and x_tr.ndim != 4:
        raise ValueError(f"{name}: preprocess {preprocess!r} works on images; these data are "
                         f"{kind_of_shape(x_tr.shape[1:])} {x_tr.shape[1:]}")
    if preprocess is not None:  # only the selected images: the transform is per image, the pool may be large
        x_tr = x_tr.copy() if x_tr.dtype != np.uint8 else x_tr.astype(np.float32)
        x_te = x_te.copy() if x_te.dtype != np.uint8 else x_te.astype(np.float32)
        raw_tr, raw_te = arrays["x_train"], arrays["x_test"]
        picked = np.concatenate([train_idx, val_idx])
        x_tr[picked] = _preprocess(raw_tr[picked], preprocess)
        x_te[test_idx] = _preprocess(raw_te[test_idx], preprocess)
    xt = x_tr[train_idx].astype(np.float64)
    axes = (0, *range(2, xt.ndim))  # per channel; for flat features (N, F), per feature
    mean = xt.mean(axis=axes, keepdims=True)[0].astype(np.float32)
    std = np.maximum(xt.std(axis=axes, keepdims=True)[0], 1e-6).astype(np.float32)
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


# ------------------------------------------------------------------------------------ ImageFolder layout
#: file suffixes an ImageFolder's class sub-folders are read for (others, e.g. notes or thumbnails DBs, are skipped)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


def _class_folders(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_image(path: Path) -> np.ndarray:
    """One image as (C, H, W): grayscale (1 channel, 8-bit or wider kept as it is) or RGB (3, alpha dropped)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in _GRAY_MODES:
                # wide grayscale (16-bit PNG, float TIFF-like modes) would be clipped by "L": keep it as floats
                img = img.convert("L" if img.mode in ("1", "L", "LA") else "F")
                return np.asarray(img)[None]
            return np.moveaxis(np.asarray(img.convert("RGB")), -1, 0)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable image ({type(err).__name__}: {err})") from None


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if image.shape[1:] == size:
        return image
    # Pillow resizes per channel ("F" mode keeps the dynamic range), bilinear, (W, H) order
    planes = [np.asarray(Image.fromarray(c.astype(np.float32)).resize(size[::-1], Image.BILINEAR))
              for c in image]
    out = np.stack(planes)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8) if image.dtype == np.uint8 else out


def _read_image_classes(root: Path, class_names: tuple[str, ...] | None = None
                        ) -> tuple[list[np.ndarray], np.ndarray, tuple[str, ...]]:
    folders = _class_folders(root)
    names = tuple(f.name for f in folders)
    if class_names is not None and names != class_names:
        raise ValueError(f"{root}: class folders {list(names)} differ from the training classes {list(class_names)}")
    if class_names is None and len(folders) < 2:
        raise ValueError(f"{root}: an ImageFolder needs at least 2 class sub-folders, found {list(names)}")
    images: list[np.ndarray] = []
    labels: list[int] = []
    for label, folder in enumerate(folders):
        files = _image_files(folder)
        if not files:
            seen = sorted({p.suffix or p.name for p in folder.iterdir()})[:8]
            raise ValueError(f"{folder}: class folder holds no {'/'.join(IMAGE_SUFFIXES)} image (found {seen})")
        images += [_read_image(f) for f in files]
        labels += [label] * len(files)
    return images, np.asarray(labels, dtype=np.int64), names


def _common_size(images: list[np.ndarray], image_size: int | tuple[int, int] | None) -> tuple[int, int]:
    if image_size is not None:
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if len(size) != 2 or min(size) < _MIN_SIZE:
            raise ValueError(f"image_size must be a side or (H, W), each ≥ {_MIN_SIZE}, got {image_size!r}")
        return size  # type: ignore[return-value]
    counts: dict[tuple[int, int], int] = {}
    for im in images:
        counts[im.shape[1:]] = counts.get(im.shape[1:], 0) + 1
    # the most frequent size; ties go to the smaller image (cheaper, and no image is blown up more than needed)
    return min(counts, key=lambda s: (-counts[s], s[0] * s[1], s))


def _stack_images(images: list[np.ndarray], size: tuple[int, int], rgb: bool, source: Path) -> np.ndarray:
    resized = 0
    out = []
    for im in images:
        if rgb and im.shape[0] == 1:
            im = np.repeat(im, 3, axis=0)
        if im.shape[1:] != size:
            im, resized = _resize(im, size), resized + 1
        out.append(im)
    if resized:
        warnings.warn(f"{source}: {resized} of {len(images)} images resized to {size[0]}×{size[1]} (bilinear)",
                      stacklevel=3)
    dtype = np.uint8 if all(im.dtype == np.uint8 for im in out) else np.float32
    return np.stack([im.astype(dtype) for im in out])


def load_image_folder(path: str | os.PathLike, *, test_fraction: float = 0.2, seed: int = 0,
                      image_size: int | tuple[int, int] | None = None
                      ) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
    """A classification set in the ImageFolder layout, read with Pillow: ``path/<class>/*.png|jpg|jpeg`` (then a
    stratified ``test_fraction`` of it is the test part), or ``path/train/<class>/…`` with ``path/test/<class>/…``.

    Classes are the sub-folder names in sorted order. Images are grayscale (one channel; 16-bit kept) unless any
    image is in colour, then all are RGB (alpha dropped). Images of other sizes are resized (bilinear, with a
    warning) to ``image_size`` or, by default, to the most frequent size among them.

    Returns:
        (arrays, class_names): the checked arrays ``x_train``, ``y_train``, ``x_test``, ``y_test``.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"image folder {str(path)!r} does not exist")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if (path / "train").is_dir() and (path / "test").is_dir():
        tr_images, y_tr, names = _read_image_classes(path / "train")
        te_images, y_te, _ = _read_image_classes(path / "test", names)
        images, labels = tr_images + te_images, np.concatenate([y_tr, y_te])
        test_idx = np.arange(len(tr_images), len(images))
    else:
        images, labels, names = _read_image_classes(path)
        n_test = max(1, int(round(test_fraction * len(images))))
        if n_test >= len(images):
            raise ValueError(f"{path}: {len(images)} images are too few to split off a test part")
        test_idx = stratified_indices(labels, n_test, seed=seed + 3)
    rgb = any(im.shape[0] == 3 for im in images)
    x = _stack_images(images, _common_size(images, image_size), rgb, path)
    train_idx = np.setdiff1d(np.arange(len(images)), test_idx)
    arrays = {"x_train": x[train_idx], "y_train": labels[train_idx], "x_test": x[test_idx], "y_test": labels[test_idx]}
    return _check_arrays(arrays, str(path), task="classification", kind="image"), names


def folder_layout(path: str | os.PathLike) -> str:
    """Which data folder ``path`` is: ``"segmentation"`` (sub-folders ``images/`` and ``masks/``), ``"idx"`` (the
    four Fashion-MNIST IDX files) or ``"image_folder"`` (class sub-folders, or ``train/`` and ``test/`` holding
    them). Checked in that order, so an ImageFolder must not name two of its classes ``images`` and ``masks``."""
    path = Path(path)
    if (path / "images").is_dir() and ((path / "masks").is_dir() or len(_class_folders(path)) == 1):
        return "segmentation"  # an images/ folder alone is a segmentation folder missing its masks: say so
    if all((path / f).is_file() for f in IDX_FILES.values()):
        return "idx"
    if _class_folders(path):
        return "image_folder"
    raise ValueError(f"{path}: a data folder must hold the sub-folders images/ and masks/ (segmentation), the four "
                     f"IDX files {list(IDX_FILES.values())}, or one sub-folder of PNG/JPEG images per class "
                     "(ImageFolder layout, optionally split into train/ and test/)")


# --------------------------------------------------------------------------------------------- dispatcher
def load_dataset(name_or_path: str, *, train_size: int | None = None, val_size: int | None = None,
                 test_size: int | None = None, data_seed: int = 0, image_size: int | None = None,
                 preprocess: str | None = None, kind: str | None = None) -> Dataset:
    """Load ``"fashion_mnist"``, ``"organs"`` (generated segmentation set), an ``.npz`` file, or a folder (see
    :func:`folder_layout`: a segmentation folder, the IDX files, an ImageFolder) and split it.

    Args:
        train_size: inputs to train on (a stratified subset); None = all but the validation split.
        val_size: validation inputs, carved from the training inputs not in the subset; None = a tenth of the
            training inputs, at most 500 (``organs``: 8).
        test_size: a stratified subset of the test inputs; None = all.
        data_seed: fixes the subsets (the same for every run of a comparison).
        image_size: side of the generated ``organs`` images (default 64); for an ImageFolder, the side (or
            (H, W)) every image is resized to (default: the most frequent size among them).
        preprocess: None or ``"edges"`` (the dental-imaging recipe's edge maps, applied before normalisation).
        kind: for an ``.npz``: ``"image"``, ``"signal"`` or ``"features"`` (default: the file's ``kind`` entry,
            else inferred from the shape; see the module docstring).
    """
    if not isinstance(name_or_path, str) or not name_or_path:
        raise TypeError(f"data must be a dataset name {DATASET_NAMES} or a path, got {name_or_path!r}")
    key = name_or_path.lower().replace("-", "_")
    if preprocess not in PREPROCESSING:
        raise ValueError(f"preprocess must be one of {PREPROCESSING}, got {preprocess!r}")
    if kind is not None and kind not in DATA_KINDS:
        raise ValueError(f"kind must be one of {DATA_KINDS} or None, got {kind!r}")
    common = dict(train_size=train_size, val_size=val_size, test_size=test_size, data_seed=data_seed,
                  preprocess=preprocess)
    if key == "fashion_mnist":
        return _split(load_fashion_mnist(), "fashion_mnist", "classification",
                      class_names=FASHION_MNIST_CLASSES, **common)
    if key == "organs":
        n_train = 24 if train_size is None else train_size
        val_size = 8 if val_size is None else val_size
        n_test = 64 if test_size is None else test_size
        x, y = generate_organs(n_train + val_size + n_test, size=64 if image_size is None else image_size,
                               seed=1000 + data_seed)
        arrays = {"x_train": x[: n_train + val_size], "y_train": y[: n_train + val_size],
                  "x_test": x[n_train + val_size:], "y_test": y[n_train + val_size:]}
        return _split(arrays, "organs", "segmentation",
                      class_names=("background", "organ", "lesion"),
                      **{**common, "train_size": n_train, "val_size": val_size, "test_size": None})
    path = Path(name_or_path)
    if path.suffix == ".npz":
        arrays = load_npz(path, kind=kind)
        task = "segmentation" if arrays["y_train"].ndim == 3 else "classification"
        return _split(arrays, str(path), task, **common)
    if path.is_dir():
        layout = folder_layout(path)
        if layout == "segmentation":
            return _split(load_segmentation_folder(path, seed=data_seed), str(path), "segmentation", **common)
        if layout == "idx":
            return _split(load_fashion_mnist(path), str(path), "classification", **common)
        arrays, names = load_image_folder(path, seed=data_seed, image_size=image_size)
        return _split(arrays, str(path), "classification", class_names=names, **common)
    if not path.exists() and os.sep not in name_or_path and "." not in name_or_path:
        raise ValueError(f"unknown dataset {name_or_path!r}; use one of {DATASET_NAMES}, an .npz file or a folder")
    raise FileNotFoundError(f"data {name_or_path!r} does not exist (expected {DATASET_NAMES}, an .npz file or a folder)")
