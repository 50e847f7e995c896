"""Full MNIST, CIFAR-10 and CIFAR-100 read from their standard distribution files; nothing is
downloaded.

MNIST: the four IDX files (LeCun et al.), gzipped or not. An IDX file is a big-endian header —
magic number 0x00000803 (2051, unsigned bytes, 3 dimensions) for images or 0x00000801 (2049,
1 dimension) for labels, then one uint32 per dimension — followed by the raw bytes.

CIFAR-10: the "python version" batches (``data_batch_1`` … ``data_batch_5``, ``test_batch``), each a
pickled dict with ``data`` (10000 × 3072 uint8, rows are R, G, B planes of 32 × 32) and ``labels``.

CIFAR-100: the "python version" (``cifar-100-python/train`` and ``test``, 50000 and 10000
images), each a pickled dict with ``data`` as above, ``fine_labels`` (100 classes) and
``coarse_labels`` (20 superclasses); the ``meta`` file (class names) is not needed.

A pickle can run arbitrary code while it loads, so every CIFAR file goes through
:class:`SafeUnpickler`, which builds only dicts, lists, tuples, strings, bytes, numbers and
numeric numpy arrays.
"""

from __future__ import annotations

import gzip
import math
import pickle
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from marginlab.data.split import DataSplit, balanced_first
from marginlab.errors import MarginlabError

__all__ = ["CIFAR100_FILES", "CIFAR100_LABELS", "CIFAR10_FILES", "MNIST_FILES", "SafeUnpickler",
           "cifar10", "cifar100", "mnist", "read_cifar100_file", "read_cifar_batch", "read_idx"]

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
IDX_IMAGES, IDX_LABELS = 2051, 2049
CIFAR10_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
CIFAR100_FILES = ("train", "test")
CIFAR100_LABELS = {"fine": 100, "coarse": 20}  # label kind → number of classes
# Hostile files are refused before they cost memory: the largest file read (CIFAR-100's train
# pickle is 158 MB, MNIST's training images 47 MB) and the nesting of a data batch (a dict of
# lists or arrays: depth 2).
MAX_FILE_BYTES = 1 << 30
MAX_PICKLE_DEPTH = 8


def _root_dir(root: str | Path | None, name: str) -> Path:
    if root is None:
        raise MarginlabError(f"data set {name!r} is read from files: give the directory as root")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise MarginlabError(f"{name} root {str(path)!r} is not a directory")
    return path


# --------------------------------------------------------------------------------------- MNIST


def _find_mnist_file(dirs: list[Path], base: str) -> Path | None:
    for d in dirs:
        for candidate in (base + ".gz", base, base.replace("-idx", ".idx")):
            if (d / candidate).is_file():
                return d / candidate
    return None


def _too_large(path: Path) -> MarginlabError:
    return MarginlabError(f"{path}: larger than {MAX_FILE_BYTES:,} bytes, not a data file "
                          "marginlab reads")


def _read_bytes(path: Path) -> bytes:
    """The bytes of ``path`` (gunzipped if it ends in .gz), at most ``MAX_FILE_BYTES``."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read(MAX_FILE_BYTES + 1)
        elif path.stat().st_size > MAX_FILE_BYTES:
            raise _too_large(path)
        else:
            raw = path.read_bytes()
    except (EOFError, OSError, zlib.error) as e:
        raise MarginlabError(f"{path}: corrupt or truncated file ({e})") from None
    if len(raw) > MAX_FILE_BYTES:
        raise _too_large(path)
    return raw


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """Read an unsigned-byte IDX file (images: magic 2051, labels: magic 2049) as a uint8 array
    of the shape its header declares.

    The header's size is computed with Python integers (no overflow) and compared with the
    file's before any array is made.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise MarginlabError(f"{path}: {len(raw)} bytes, too short for an IDX header")
    found = int.from_bytes(raw[:4], "big")
    if found != magic:
        kind = "image" if magic == IDX_IMAGES else "label"
        raise MarginlabError(f"{path}: wrong magic number {found} (expected {magic} for an IDX "
                             f"{kind} file)")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise MarginlabError(f"{path}: truncated IDX header ({len(raw)} of {header} bytes)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(shape)
    if len(raw) - header != expected:
        raise MarginlabError(f"{path}: {len(raw) - header} data bytes, but the header declares "
                             f"shape {shape} = {expected} bytes")
    if ndim > 1 and 0 in shape[1:]:
        raise MarginlabError(f"{path}: the header declares empty images {shape[1:]}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def _check_labels(y: np.ndarray, num_classes: int, where: str) -> None:
    bad = np.unique(y[(y < 0) | (y >= num_classes)]).tolist()
    if bad:
        raise MarginlabError(f"{where}: labels must be in 0..{num_classes - 1}, found {bad[:5]}")


def _finish(X: np.ndarray, y: np.ndarray, Xt: np.ndarray, yt: np.ndarray, name: str,
            n_train: int | None, n_test: int | None, num_classes: int = 10) -> DataSplit:
    """Class-balanced subsets, then uint8 → float32 in [0, 1] (after subsetting, to save memory)."""
    for part, labels in (("training", y), ("test", yt)):
        if len(labels) == 0:
            raise MarginlabError(f"{name}: the {part} set is empty")
    tr = balanced_first(y, n_train, num_classes, what="n_train", of=f"{name}'s training set")
    te = balanced_first(yt, n_test, num_classes, what="n_test", of=f"{name}'s test set")
    return DataSplit(torch.from_numpy(X[tr].astype(np.float32) / 255.0),
                     torch.from_numpy(y[tr].astype(np.int64)),
                     torch.from_numpy(Xt[te].astype(np.float32) / 255.0),
                     torch.from_numpy(yt[te].astype(np.int64)), name, num_classes)


def mnist(root: str | Path | None, n_train: int | None = None,
          n_test: int | None = None) -> DataSplit:
    """Full MNIST (60000 train, 10000 test) from the four IDX files in ``root`` (or in
    torchvision's ``root/MNIST/raw``); images (N, 1, H, W) float32 in [0, 1]."""
    base = _root_dir(root, "mnist")
    dirs = [base, base / "MNIST" / "raw"]
    paths = {key: _find_mnist_file(dirs, f) for key, f in MNIST_FILES.items()}
    missing = [MNIST_FILES[k] for k, p in paths.items() if p is None]
    if missing:
        expected = ", ".join(f + "[.gz]" for f in MNIST_FILES.values())
        raise MarginlabError(f"mnist: {base} lacks {', '.join(missing)}; expected {expected}")
    parts = {}
    for split in ("train", "test"):
        images = read_idx(paths[f"{split}_images"], IDX_IMAGES)
        labels = read_idx(paths[f"{split}_labels"], IDX_LABELS)
        if len(images) != len(labels):
            raise MarginlabError(f"mnist {split}: {len(images)} images but {len(labels)} labels")
        _check_labels(labels, 10, f"{paths[f'{split}_labels']}")
        parts[split] = images[:, None], labels
    (X, y), (Xt, yt) = parts["train"], parts["test"]
    if X.shape[1:] != Xt.shape[1:]:
        raise MarginlabError(f"mnist: train images {X.shape[2:]} and test images {Xt.shape[2:]} "
                             "differ in size")
    return _finish(X, y, Xt, yt, "mnist", n_train, n_test)


# ------------------------------------------------------------------------------------ CIFAR-10


def _numpy_reconstruct() -> Any:
    try:
        from numpy._core.multiarray import _reconstruct  # numpy ≥ 2
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
    """numpy's array constructor for unpickling, limited to plain ndarrays."""
    if subtype is not np.ndarray:
        raise MarginlabError(f"refusing to reconstruct an array of type {subtype!r}")
    return _numpy_reconstruct()(subtype, shape, typecode)


def _dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    """``numpy.dtype`` for unpickling: numeric and string dtypes only, never Python objects."""
    if not isinstance(spec, (str, bytes)):
        raise MarginlabError(f"refusing to unpickle dtype {spec!r}")
    dt = np.dtype(spec.decode("latin1") if isinstance(spec, bytes) else spec, bool(align),
                  bool(copy))
    if dt.hasobject:
        raise MarginlabError(f"refusing to unpickle an object dtype {dt}")
    return dt


def _latin1_bytes(text: Any = "", encoding: Any = "latin1") -> bytes:
    """How Python 3 pickles bytes at protocol < 3: ``_codecs.encode(str, "latin1")``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise MarginlabError("refusing to unpickle a bytes object not encoded as latin1")
    return text.encode("latin1")


def _empty_bytes(*args: Any) -> bytes:
    """Python 3 pickles b"" at protocol < 3 as ``bytes()``."""
    if args:
        raise MarginlabError("refusing to call bytes() with arguments while unpickling")
    return b""


# Every global a CIFAR batch needs (Python 2 pickles, or protocol-2 pickles written by Python 3
# with numpy 1 or 2); dicts, lists, tuples, str, int and float need none.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
    ("_codecs", "encode"): _latin1_bytes,
    ("builtins", "bytes"): _empty_bytes,
    ("__builtin__", "bytes"): _empty_bytes,
}


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that builds only dicts, lists, tuples, str, bytes, int, float and numeric
    numpy arrays; any other global (a class, a function) raises MarginlabError unexecuted."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise MarginlabError(f"refusing to unpickle global {module}.{name}: a data batch "
                                 "holds only dicts, lists, strings, numbers and arrays") from None

    def persistent_load(self, pid: Any) -> Any:
        raise MarginlabError("refusing to unpickle a persistent id")


def _check_plain(obj: Any, where: Path) -> None:
    """Reject numpy arrays that hold Python objects, however they were smuggled in, and
    containers nested deeper than ``MAX_PICKLE_DEPTH``. Iterative, and each container is
    visited once, so shared or self-referencing structures cost no more than their size."""
    stack, seen = [(obj, 0)], set()
    while stack:
        item, depth = stack.pop()
        if isinstance(item, np.ndarray):
            if item.dtype.hasobject:
                raise MarginlabError(f"{where}: holds an array of Python objects")
            continue
        if not isinstance(item, (dict, list, tuple)) or id(item) in seen:
            continue
        if depth >= MAX_PICKLE_DEPTH:
            raise MarginlabError(f"{where}: nested deeper than {MAX_PICKLE_DEPTH} levels; a data "
                                 "batch is a dict of lists and arrays")
        seen.add(id(item))
        children = (*item.keys(), *item.values()) if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children)


def _get(batch: dict, key: str, path: Path) -> Any:
    for k in (key.encode(), key):
        if k in batch:
            return batch[k]
    raise MarginlabError(f"{path}: no {key!r} entry (keys: {sorted(map(str, batch))[:6]})")


def _unpickle(path: Path) -> dict:
    """A CIFAR python file → its dict, loaded with :class:`SafeUnpickler` (Python 2 strings come
    back as bytes); anything else, or a file that does not unpickle, is a MarginlabError."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise _too_large(path)
        with open(path, "rb") as f:
            batch = SafeUnpickler(f, encoding="bytes").load()
    except RecursionError:
        raise MarginlabError(f"{path}: nested too deeply to be a data batch") from None
    except MarginlabError as e:
        raise MarginlabError(str(e) if str(e).startswith(str(path)) else f"{path}: {e}"
                             ) from None
    except OSError as e:
        raise MarginlabError(f"{path}: cannot read ({e.strerror or e})") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, OverflowError, MemoryError, UnicodeDecodeError) as e:
        raise MarginlabError(f"{path}: corrupt or truncated pickle ({type(e).__name__}: {e})"
                             ) from None
    if not isinstance(batch, dict):
        raise MarginlabError(f"{path}: expected a dict, got {type(batch).__name__}")
    _check_plain(batch, path)
    return batch


def _images(data: Any, path: Path) -> np.ndarray:
    """The ``data`` entry (N × 3072 uint8, R, G, B planes of 32 × 32) → (N, 3, 32, 32)."""
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        shape = getattr(data, "shape", type(data).__name__)
        raise MarginlabError(f"{path}: 'data' must be an N × 3072 uint8 array, got {shape}")
    return data.reshape(-1, 3, 32, 32)


def _labels(labels: Any, key: str, n: int, num_classes: int, path: Path) -> np.ndarray:
    """A label list → (n,) int64 in 0..num_classes−1; anything but integers (0.5, True, "3")
    is refused, never truncated."""
    if not isinstance(labels, (list, tuple, np.ndarray)):
        raise MarginlabError(f"{path}: {key!r} must be a list of integers, got "
                             f"{type(labels).__name__}")
    bad = next((v for v in labels if isinstance(v, (bool, np.bool_))
                or not isinstance(v, (int, np.integer))), None) \
        if not isinstance(labels, np.ndarray) else None
    if bad is not None:
        raise MarginlabError(f"{path}: {key!r} must be integers, found {bad!r}")
    if isinstance(labels, np.ndarray) and labels.dtype.kind not in "iu":
        raise MarginlabError(f"{path}: {key!r} must be integers, got an array of {labels.dtype}")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise MarginlabError(f"{path}: {key!r} must be integers in 0..{num_classes - 1}"
                             ) from None
    if y.ndim != 1 or len(y) != n:
        raise MarginlabError(f"{path}: {n} images but {y.size} {key}")
    _check_labels(y, num_classes, str(path))
    return y


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch → (N, 3, 32, 32) uint8 images and (N,) int64 labels, loaded with
    :class:`SafeUnpickler` (Python 2 strings come back as bytes)."""
    path = Path(path)
    batch = _unpickle(path)
    data, labels = _get(batch, "data", path), _get(batch, "labels", path)
    X = _images(data, path)
    return X, _labels(labels, "labels", len(X), 10, path)


def cifar10(root: str | Path | None, n_train: int | None = None,
            n_test: int | None = None) -> DataSplit:
    """CIFAR-10 (50000 train, 10000 test) from ``root/cifar-10-batches-py`` or batches directly
    in ``root``; images (N, 3, 32, 32) float32 in [0, 1]."""
    base = _root_dir(root, "cifar10")
    folder = base / "cifar-10-batches-py" if (base / "cifar-10-batches-py").is_dir() else base
    missing = [f for f in CIFAR10_FILES if not (folder / f).is_file()]
    if missing:
        hint = " (extract cifar-10-python.tar.gz first)" if any(base.glob("*.tar.gz")) else ""
        raise MarginlabError(f"cifar10: {folder} lacks {', '.join(missing)}; expected "
                             f"{', '.join(CIFAR10_FILES)}{hint}")
    train = [read_cifar_batch(folder / f) for f in CIFAR10_FILES[:-1]]
    Xt, yt = read_cifar_batch(folder / CIFAR10_FILES[-1])
    X = np.concatenate([b[0] for b in train])
    y = np.concatenate([b[1] for b in train])
    return _finish(X, y, Xt, yt, "cifar10", n_train, n_test)


# ----------------------------------------------------------------------------------- CIFAR-100


def _label_kind(labels: str) -> int:
    if labels not in CIFAR100_LABELS:
        raise MarginlabError(f"cifar100 labels must be 'fine' (100 classes) or 'coarse' (20 "
                             f"superclasses), got {labels!r}")
    return CIFAR100_LABELS[labels]


def read_cifar100_file(path: str | Path, labels: str = "fine") -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-100 python file (``train`` or ``test``) → (N, 3, 32, 32) uint8 images and (N,)
    int64 labels, loaded with :class:`SafeUnpickler`.

    Args:
        path: the file.
        labels: ``fine`` (``fine_labels``, 0..99) or ``coarse`` (``coarse_labels``, 0..19).
    """
    path, num_classes = Path(path), _label_kind(labels)
    batch = _unpickle(path)
    key = f"{labels}_labels"
    data, y = _get(batch, "data", path), _get(batch, key, path)
    X = _images(data, path)
    return X, _labels(y, key, len(X), num_classes, path)


def cifar100(root: str | Path | None, n_train: int | None = None, n_test: int | None = None,
             *, labels: str = "fine") -> DataSplit:
    """CIFAR-100 (50000 train, 10000 test) from ``root/cifar-100-python`` or the files directly
    in ``root``; images (N, 3, 32, 32) float32 in [0, 1].

    Args:
        root: the directory holding ``cifar-100-python/`` (as extracted from
            ``cifar-100-python.tar.gz``), or that folder itself.
        n_train, n_test: class-balanced subsets (first images of each class, in file order).
        labels: ``fine`` (100 classes, the default) or ``coarse`` (20 superclasses).
    """
    num_classes = _label_kind(labels)
    base = _root_dir(root, "cifar100")
    folder = base / "cifar-100-python" if (base / "cifar-100-python").is_dir() else base
    missing = [f for f in CIFAR100_FILES if not (folder / f).is_file()]
    if missing:
        if any(base.glob("*.tar.gz")):
            hint = " (extract cifar-100-python.tar.gz first)"
        elif (folder / "cifar-10-batches-py").is_dir() or (folder / "data_batch_1").is_file():
            hint = " (this holds CIFAR-10; use data set cifar10)"
        else:
            hint = ""
        raise MarginlabError(f"cifar100: {folder} lacks {', '.join(missing)}; expected "
                             f"{', '.join(CIFAR100_FILES)} (the CIFAR-100 python version){hint}")
    X, y = read_cifar100_file(folder / "train", labels)
    Xt, yt = read_cifar100_file(folder / "test", labels)
    return _finish(X, y, Xt, yt, "cifar100", n_train, n_test, num_classes)
