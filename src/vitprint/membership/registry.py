"""The detector registry: every membership detector has one shape and one name.

A detector follows the scikit-learn estimator shape::

    det = create_detector("pixel_nn", k=5).fit(generated, reference=None)
    scores = det.score_samples(real)          # (N,) higher = more likely used
    scores, nearest = det.score_with_evidence(real)   # nearest generated index, or None

Images are uint8 arrays ``(N, S, S)`` (anything sliceable along the first axis,
a memory-mapped array included) or an ``ImageSet``. A new detector is one module
in ``vitprint/membership/detectors/`` with a class decorated by
``@register_detector``; modules there are found automatically.

``create_detector(name, **options)`` passes each detector only the options its
constructor accepts, so a caller can hand every detector the same context
(autoencoder, device, batch size, seed, ...) and each takes what it needs.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any, Callable

from vitprint.errors import VitprintError
from vitprint.membership.base import Detector
from vitprint.membership.calibrated import Calibrated, CrossFitted

_REGISTRY: dict[str, type["Detector"]] = {}
_DISCOVERED = False


def register_detector(cls: type[Detector]) -> type[Detector]:
    """Class decorator: make ``cls`` available as ``create_detector(cls.name)``."""
    if not cls.name:
        raise VitprintError(f"detector class {cls.__name__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise VitprintError(f"a detector named {cls.name!r} is registered already ({_REGISTRY[cls.name].__name__})")
    _REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    global _DISCOVERED
    if _DISCOVERED:
        return
    from vitprint.membership import detectors

    for mod in pkgutil.iter_modules(detectors.__path__):
        importlib.import_module(f"{detectors.__name__}.{mod.name}")
    _DISCOVERED = True


def available_detectors() -> list[str]:
    """Names of every registered detector, sorted."""
    _discover()
    return sorted(_REGISTRY)


def detector_class(name: str) -> type[Detector]:
    """The registered class called ``name`` (an error listing the names otherwise)."""
    _discover()
    if name not in _REGISTRY:
        raise VitprintError(f"unknown detector {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def accepted_options(factory: Callable, options: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``options`` that ``factory``'s signature accepts."""
    params = inspect.signature(factory).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return dict(options)
    return {k: v for k, v in options.items() if k in params}


def create_detector(name: str, **options) -> Detector:
    """A new, unfitted detector; options its constructor does not take are ignored.

    ``<name>_cal`` gives the calibrated variant of a calibratable detector. A
    detector that uses a reference set comes wrapped so that it cross-fits
    (no real image is ever its own reference).
    """
    _discover()
    folds, seed = options.get("ref_folds", 5), options.get("seed", 0)
    if name.endswith("_cal") and name not in _REGISTRY:
        base = detector_class(name[: -len("_cal")])
        if not base.calibratable:
            raise VitprintError(f"detector {base.name!r} has no calibrated variant")
        kw = accepted_options(base, options)
        return Calibrated(lambda: base(**kw), folds, seed)
    cls = detector_class(name)
    kw = accepted_options(cls, options)
    if cls.needs_reference:
        return CrossFitted(lambda: cls(**kw), folds, seed)
    return cls(**kw)
