"""One module per method. A module registers its class under a key with ``@register("key")``;
every module in this package is imported on first use, so adding a file adds a method. ``base``
holds the protocol the methods implement; ``blocks/`` the networks and distributions they share
(MLPs and likelihoods, convolutional encoders, flows, mixtures, PixelCNNs, optimizers)."""

import importlib
import inspect
import pkgutil

from models.base import LatentVariableModel

_REGISTRY: dict[str, type[LatentVariableModel]] = {}


def register(key: str):
    def wrap(cls):
        if key in _REGISTRY:
            raise ValueError(f"method key {key!r} is registered twice")
        _REGISTRY[key] = cls
        cls.key = key
        return cls

    return wrap


def registry() -> dict[str, type[LatentVariableModel]]:
    # Import every module (importing one that is already loaded is a no-op): a module imported
    # directly before this call must not hide the others.
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base" and not module.ispkg:
            importlib.import_module(f"{__name__}.{module.name}")
    return dict(sorted(_REGISTRY.items()))


def hyper_parameters(key: str) -> dict[str, object]:
    """The hyper-parameters a method takes, with their defaults (``inspect.Parameter.empty`` if none):
    its constructor's keywords, and, where it forwards ``**kwargs`` to its parent's constructor (a
    method built on the VAE), the parent's, and so on up."""
    found = {}
    for cls in registry()[key].__mro__:
        if "__init__" not in vars(cls):
            continue
        parameters = inspect.signature(cls.__init__).parameters.values()
        for p in parameters:
            if p.name not in ("self", "data_shape", "likelihood") and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                found.setdefault(p.name, p.default)
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            return found
    return found


def build(key: str, data_shape: tuple[int, ...], hyper: dict, likelihood: str = "bernoulli") -> LatentVariableModel:
    """The method ``key`` for images of ``data_shape`` with the dataset's pixel ``likelihood``."""
    return registry()[key](data_shape=tuple(data_shape), likelihood=likelihood, **hyper)
