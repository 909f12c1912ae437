"""CelebA on small files in its real formats: JPEGs of 178 × 218 in torchvision's layout, zipped as
img_align_celeba.zip or extracted to img_align_celeba/."""

import hashlib
import io
import random
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks import DataUnavailable, UserError, data
from benchmarks.data import celeba

WIDTH, HEIGHT = 178, 218  # every aligned CelebA image
# The central 108 × 108 square of a 178 × 218 image: columns 35..142, rows 55..162.
LEFT, TOP = 35, 55


def jpeg(image: np.ndarray) -> bytes:
    """[H, W, 3] uint8 as a JPEG file, written with PIL at the best quality."""
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="JPEG", quality=100, subsampling=0)
    return out.getvalue()


def uniform(level: int) -> np.ndarray:
    return np.full((HEIGHT, WIDTH, 3), level, dtype=np.uint8)


# Ten faces, each one grey level, so that an image is known by its value after decoding.
LEVELS = [20 + 20 * i for i in range(10)]


def write_celeba(root: Path, as_zip: bool) -> Path:
    """The ten images as 000001.jpg .. 000010.jpg, written in a shuffled order (the split must not
    follow the order of the file system or of the archive)."""
    folder = root / "celeba"
    folder.mkdir(parents=True)
    order = list(range(10))
    random.Random(3).shuffle(order)
    files = {f"{i + 1:06d}.jpg": jpeg(uniform(LEVELS[i])) for i in order}
    if as_zip:
        with zipfile.ZipFile(folder / "img_align_celeba.zip", "w") as archive:
            for name, content in files.items():
                archive.writestr(f"img_align_celeba/{name}", content)
        return folder / "img_align_celeba.zip"
    (folder / "img_align_celeba").mkdir()
    for name, content in files.items():
        (folder / "img_align_celeba" / name).write_bytes(content)
    return folder / "img_align_celeba"


@pytest.fixture
def small_split(monkeypatch, tmp_path):
    """Ten images: 8 (80%) for the code's training part, of which the last 3 validate; 2 test. The
    cache in a temporary folder."""
    monkeypatch.setattr(celeba, "VALID_IMAGES", 3)
    monkeypatch.setattr(data.sources, "CACHE_DIR", tmp_path / "cache")
    monkeypatch.delenv("VLAEBENCH_DATA", raising=False)
    return tmp_path / "data"


def levels_of(images: torch.Tensor) -> list[int]:
    """The grey level of each uniform image, read back from its [0, 1] intensities."""
    return [round(v) for v in (images.mean((1, 2, 3)) * 255).tolist()]


def with_published_md5_of(monkeypatch, archive: Path):
    """The manifest with the md5 of the small archive (the published one verifies the real archive)."""
    md5s = {"img_align_celeba.zip": hashlib.md5(archive.read_bytes()).hexdigest()}
    monkeypatch.setitem(data.sources.MANIFEST, "celeba", {"md5": md5s})


def test_the_central_square_is_kept_and_resized_the_right_way_up():
    # Four coloured quadrants inside the central square, a frame of another colour around it: a crop
    # off the centre would bring the frame in; a transposition would swap the quadrants.
    image = uniform(255)
    quadrants = {(0, 0): (200, 0, 0), (0, 1): (0, 200, 0), (1, 0): (0, 0, 200), (1, 1): (200, 200, 0)}
    for (row, column), colour in quadrants.items():
        image[TOP + 54 * row : TOP + 54 * (row + 1), LEFT + 54 * column : LEFT + 54 * (column + 1)] = colour
    out = celeba.prepare_image(jpeg(image), "pattern.jpg")
    assert out.shape == (3, 64, 64) and out.dtype == np.uint8
    for (row, column), colour in quadrants.items():
        block = out[:, 32 * row + 2 : 32 * (row + 1) - 2, 32 * column + 2 : 32 * (column + 1) - 2].astype(int)
        assert np.abs(block - np.array(colour)[:, None, None]).max() < 12, (row, column)
    assert out.max(0).min() < 230  # no pixel of the white frame survives, not even at the edges


@pytest.mark.parametrize("as_zip", [True, False])
def test_the_sorted_files_are_split_as_the_ladder_code_splits_them(small_split, monkeypatch, as_zip):
    source = write_celeba(small_split, as_zip)
    if as_zip:
        with_published_md5_of(monkeypatch, source)
    dataset = data.load("celeba", small_split, {"likelihood": "gaussian"})
    assert dataset.shape == (3, 64, 64) and dataset.test_labels is None
    assert dataset.info["sizes"] == {"train": 5, "valid": 3, "test": 2}
    assert levels_of(dataset.train) == LEVELS[:5]
    assert levels_of(dataset.valid) == LEVELS[5:8]
    assert levels_of(dataset.test) == LEVELS[8:]
    if as_zip:
        assert "md5 of img_align_celeba.zip matches" in dataset.info["verified"]
    else:
        assert "sha256 of the prepared images" in dataset.info["verified"]


def test_the_zip_and_the_folder_it_extracts_to_give_the_same_tensors(small_split, monkeypatch, tmp_path):
    with_published_md5_of(monkeypatch, write_celeba(small_split, as_zip=True))
    from_zip = data.load("celeba", small_split, {"likelihood": "gaussian"})
    write_celeba(tmp_path / "extracted", as_zip=False)
    from_folder = data.load("celeba", tmp_path / "extracted", {"likelihood": "gaussian"})
    for split in ("train", "valid", "test"):
        assert torch.equal(getattr(from_zip, split), getattr(from_folder, split)), split


def test_the_prepared_images_are_decoded_once_and_read_from_the_cache(small_split, monkeypatch):
    folder = write_celeba(small_split, as_zip=False)
    first = data.load("celeba", small_split, {"likelihood": "gaussian"})
    monkeypatch.setattr(celeba, "prepare_image", lambda *_: pytest.fail("decoded again despite the cache"))
    assert torch.equal(data.load("celeba", small_split, {"likelihood": "gaussian"}).test, first.test)
    # Other files are other images: a changed folder is decoded afresh, not served from the cache.
    (folder / "000011.jpg").write_bytes(jpeg(uniform(250)))
    with pytest.raises(pytest.fail.Exception, match="decoded again"):
        data.load("celeba", small_split, {"likelihood": "gaussian"})


def test_an_archive_that_is_not_the_published_one_is_refused(small_split):
    write_celeba(small_split, as_zip=True)
    with pytest.raises(UserError, match="checksum mismatch.*00d2c5bc6d35e252742224ab0c1e8fcb"):
        data.load("celeba", small_split, {"likelihood": "gaussian"})


def test_a_file_that_is_not_an_image_is_named(small_split):
    folder = write_celeba(small_split, as_zip=False)
    (folder / "000004.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match="000004.jpg is not a readable image"):
        data.load("celeba", small_split, {"likelihood": "gaussian"})


def test_without_the_files_it_says_where_to_put_them(small_split):
    small_split.mkdir()
    with pytest.raises(DataUnavailable, match="img_align_celeba.zip or the folder img_align_celeba/"):
        data.load("celeba", small_split, {"likelihood": "gaussian"})
    assert data.DATASETS["celeba"].locate(None) is None  # nothing in the cache either
    with pytest.raises(UserError, match="likelihood = 'bernoulli' is not valid"):
        data.load("celeba", small_split, {"likelihood": "bernoulli"})


@pytest.mark.parametrize("as_zip", [False, True], ids=["folder", "zip"])
def test_data_status_verifies_without_decoding_the_images(small_split, monkeypatch, as_zip):
    found = write_celeba(small_split, as_zip)
    if as_zip:
        with_published_md5_of(monkeypatch, found)
    monkeypatch.setattr(celeba, "prepare_image", lambda *_: pytest.fail("status decoded the images"))
    row = next(row for row in data.status(small_split) if row["dataset"] == "celeba")
    assert row["available"] == "yes" and str(found) in row["origin"]
    published = "md5 of img_align_celeba.zip matches the checksum manifest"
    assert row["verified"] == (published if as_zip else "no published checksum for the extracted images")
    if as_zip:  # an archive that is not the published one says so
        monkeypatch.setitem(data.sources.MANIFEST, "celeba", {"md5": {"img_align_celeba.zip": "0" * 32}})
        row = next(row for row in data.status(small_split) if row["dataset"] == "celeba")
        assert row["verified"].startswith("NO: ") and "checksum mismatch" in row["verified"]
