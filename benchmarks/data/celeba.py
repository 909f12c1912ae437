"""``celeba``: CelebA's aligned and cropped faces (202,599 JPEGs of 178 × 218), in ``celeba/`` of the
data directory or the download cache as torchvision's CelebA class keeps them: ``img_align_celeba.zip``
(its md5 in the checksum manifest, as torchvision publishes it) or the folder ``img_align_celeba/`` the
zip extracts to (no published checksum: the record carries the sha256 of the decoded images).

Prepared as the ladder code prepares it (ermongroup/Variational-Ladder-Autoencoder,
``dataset/dataset_celeba.py``): the central 108 × 108 square of each image, resized to 64 × 64
(bilinear, through PIL as scipy's imresize did); the first 80% of the files train and the rest test.
The code takes its glob's order, which the file system chooses; here the names are sorted (000001.jpg
first). The last 5,000 training images validate, as for the other colour sets. Pixels in [0, 1] for a
continuous likelihood (the code scales them to [−1, 1] for its L1 error). No labels.

Decoding 202,599 JPEGs takes minutes, so the 64 × 64 images are kept once in the cache as a uint8
``.npy`` named after the files they came from, and read from there afterwards. Loaded as float32 the
splits take about 10 GB."""

import hashlib
import io
import math
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from benchmarks import DataUnavailable, UserError
from benchmarks.data import CONTINUOUS, Dataset, Entry, _make, sources

SHAPE = (3, 64, 64)
FOLDER = "celeba"  # torchvision's CelebA(root) keeps its files in root/celeba/
ARCHIVE = "img_align_celeba.zip"
IMAGES = "img_align_celeba"  # the folder the archive holds and extracts to
CROP = 108  # the code's npx: the central square kept before resizing
TRAIN_FRACTION = 0.8  # the code's split: the first 80% of the files train, the rest test
VALID_IMAGES = 5_000  # the last of the training images validate (as sources.COLOUR_VALID)
CACHE_VERSION = "crop108-bilinear64-v1"  # part of the cache's name: change it when the preparation changes

HOW_TO_GET = (
    f"place {ARCHIVE} (torchvision.datasets.CelebA(root, download=True) fetches it into root/celeba/) or the "
    f"folder {IMAGES}/ it extracts to in DIR/{FOLDER}/ and pass --data-dir DIR"
)


UNVERIFIED_FOLDER = "no published checksum for the extracted images"


class Source(NamedTuple):
    """Where the JPEGs are: their sorted names, a reader of one file's bytes, what names them in the
    cache, and what the record says of their verification."""

    origin: str
    names: list[str]
    read: Callable[[str], bytes]
    key: str
    verified: str


def _archive(path: Path, origin: str) -> Source:
    expected = sources.MANIFEST["celeba"]["md5"][ARCHIVE]
    sources._verified_md5(path, expected)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise UserError(f"{path}: not a readable zip archive ({e})") from None
    names = sorted(n for n in archive.namelist() if n.startswith(f"{IMAGES}/") and n.lower().endswith(".jpg"))
    return Source(
        origin, names, archive.read, f"md5-{expected}", "md5 of img_align_celeba.zip matches the checksum manifest"
    )


def _folder(path: Path, origin: str) -> Source:
    names = sorted(p.name for p in path.iterdir() if p.suffix.lower() == ".jpg")
    listing = "".join(f"{name} {(path / name).stat().st_size}\n" for name in names)
    key = "listing-" + hashlib.sha256(listing.encode()).hexdigest()[:16]
    return Source(origin, names, lambda name: (path / name).read_bytes(), key, "")


def _find(data_dir=None) -> tuple[str, Callable[[], Source]] | None:
    """The archive, else the extracted folder, in the data directory (if one is given, the only place
    looked at) or the download cache: (origin, its Source, made when called)."""
    data_dir = sources.user_data_dir(data_dir)
    root = Path(data_dir or sources.CACHE_DIR) / FOLDER
    place = "data directory" if data_dir else "download cache"
    if (root / ARCHIVE).is_file():
        origin = f"{place} {root / ARCHIVE}"
        return origin, lambda: _archive(root / ARCHIVE, origin)
    if (root / IMAGES).is_dir():
        origin = f"{place} {root / IMAGES}"
        return origin, lambda: _folder(root / IMAGES, origin)
    if data_dir:
        raise DataUnavailable(f"celeba not found in {root}: expected {ARCHIVE} or the folder {IMAGES}/")
    return None


def locate(data_dir=None) -> tuple[str, Callable[[], Dataset]] | None:
    """(origin, loader) of the files ``_find`` finds."""
    found = _find(data_dir)
    return None if found is None else (found[0], lambda: read(found[1]()))


def verification(data_dir=None) -> str:
    """What ``data status`` says of the files without decoding some 200,000 JPEGs: the archive's md5
    is checked (a mismatch is an error); extracted images have no published checksum."""
    return _find(data_dir)[1]().verified or UNVERIFIED_FOLDER


def load(data_dir=None) -> Dataset:
    found = locate(data_dir)
    if found is None:
        raise DataUnavailable(f"celeba is not available: {HOW_TO_GET}")
    return found[1]()


def prepare_image(jpeg: bytes, name: str) -> np.ndarray:
    """One file's central ``CROP`` square resized to 64 × 64, [3, 64, 64] uint8."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(jpeg)) as opened:
            image = opened.convert("RGB")
    except (OSError, SyntaxError, ValueError) as e:
        raise UserError(f"celeba: {name} is not a readable image ({e})") from None
    width, height = image.size
    if min(width, height) < CROP:
        raise UserError(f"celeba: {name} is {width}×{height}, smaller than the {CROP}×{CROP} crop")
    top, left = round((height - CROP) / 2), round((width - CROP) / 2)
    square = image.crop((left, top, left + CROP, top + CROP)).resize(SHAPE[1:], Image.BILINEAR)
    return np.asarray(square).transpose(2, 0, 1)


def decoded(source: Source) -> np.ndarray:
    """Every image of ``source`` prepared, [N, 3, 64, 64] uint8, from the cache where an earlier load
    left them."""
    cached = sources.CACHE_DIR / FOLDER / f"{IMAGES}-{CACHE_VERSION}-{source.key}.npy"
    if cached.is_file():
        return np.load(cached)
    from tqdm import tqdm

    images = np.empty((len(source.names), *SHAPE), dtype=np.uint8)
    for i, name in enumerate(tqdm(source.names, desc="celeba: decoding (once; kept in the cache)", leave=False)):
        images[i] = prepare_image(source.read(name), name)
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_suffix(f".{os.getpid()}.tmp")
    with open(partial, "wb") as f:
        np.save(f, images)
    partial.replace(cached)  # whole or absent: a killed load leaves no half-written cache
    return images


def read(source: Source) -> Dataset:
    if not source.names:
        raise UserError(f"celeba: {source.origin} holds no JPEG images")
    images = decoded(source)
    n_fit = math.floor(len(images) * TRAIN_FRACTION)
    if n_fit <= VALID_IMAGES:
        raise UserError(
            f"celeba: {len(images)} images in {source.origin}; the split needs more than "
            f"{VALID_IMAGES / TRAIN_FRACTION:.0f} (CelebA has 202,599)"
        )
    as_float = lambda a: torch.from_numpy(a).float().div_(255).numpy()  # one float32 copy, not a float64 one
    verified = (
        source.verified
        or f"{UNVERIFIED_FOLDER}; sha256 of the prepared images " + hashlib.sha256(images.tobytes()).hexdigest()
    )
    return _make(
        "celeba",
        SHAPE,
        as_float(images[: n_fit - VALID_IMAGES]),
        as_float(images[n_fit - VALID_IMAGES : n_fit]),
        as_float(images[n_fit:]),
        None,
        {
            "variant": f"CelebA aligned, central {CROP}×{CROP} resized to 64×64 (ladder code; intensities uint8/255)",
            "split": f"{n_fit - VALID_IMAGES} train / {VALID_IMAGES} validation (the last of the first "
            f"{TRAIN_FRACTION:.0%} of the sorted files, which the ladder code trains on) / {len(images) - n_fit} test",
            "origin": source.origin,
            "verified": verified,
        },
    )


ENTRY = Entry(load, locate, SHAPE, HOW_TO_GET, likelihoods=CONTINUOUS, order=100, verification=verification)
