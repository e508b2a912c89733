"""Finding the subsets and generated images of an attribution job.

Real images come as one sub-folder per subset (``real/<subset>/``). Labelled
generated images (development) come the same way (``generated/<subset>/``),
with the same subset names. The pool to attribute is a flat folder, or
sub-folders per subset (then it is evaluated too). The challenge's layout is
recognised as in ``detect``: a development folder holds ``real/`` and
``generated/`` side by side; a test folder holds a flat ``generated/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vitprint.data.folders import list_images
from vitprint.errors import VitprintError


@dataclass
class AttributionInputs:
    """``real``: subset -> folder. ``dev``: subset -> labelled generated folder (or None). ``pool``: the folder
    to attribute (or None); ``pool_subsets``: subset -> folder when the pool is labelled."""

    real: dict[str, Path]
    dev: dict[str, Path] | None = None
    pool: Path | None = None
    pool_subsets: dict[str, Path] | None = None

    @property
    def subsets(self) -> list[str]:
        return sorted(self.real)


def _subfolders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _loose_images(root: Path) -> list[Path]:
    return [p for p in list_images(root) if p.parent == root]


def subset_folders(root: str | Path, what: str) -> dict[str, Path]:
    """``<subset> -> folder`` of a folder holding one sub-folder of images per subset."""
    root = Path(root)
    if not root.is_dir():
        raise VitprintError(f"not a folder: {root}")
    subs = _subfolders(root)
    if len(subs) < 2:
        raise VitprintError(f"{what} {root} must hold one sub-folder per subset (at least 2), found "
                            f"{', '.join(p.name for p in subs) or 'none'}")
    loose = _loose_images(root)
    if loose:
        raise VitprintError(f"{what} {root} holds images outside the subset folders, e.g. {loose[0].name}; "
                            "move each into its subset's folder")
    for p in subs:
        list_images(p)  # an empty subset is an error naming it
    return {p.name: p for p in subs}


def _check_names(labelled: dict[str, Path], subsets: list[str], what: str) -> None:
    unknown = sorted(set(labelled) - set(subsets))
    if unknown:
        raise VitprintError(f"{what} has sub-folders that are not real subsets: {', '.join(unknown)} "
                            f"(the subsets are {', '.join(subsets)})")


def _check_ids(files: list[Path], where: Path) -> None:
    """Run-file ids are stems: unique across the pool and free of commas and line breaks."""
    seen: dict[str, Path] = {}
    for f in files:
        if any(c in f.name for c in ",\n\r"):
            raise VitprintError(f"the image name {f.name!r} in {where} cannot be an id in a run file (a comma or a "
                                "line break); rename it")
        if f.stem in seen:
            raise VitprintError(f"two images in {where} share the id {f.stem!r}: {seen[f.stem]} and {f}")
        seen[f.stem] = f


def resolve_attribution(real=None, generated=None, dev_generated=None, dev=None, test=None) -> AttributionInputs:
    """Combine challenge folders and explicit folders into one job, checking it makes sense."""
    if dev:
        d = Path(dev)
        if not (d / "real").is_dir() or not (d / "generated").is_dir():
            found = ", ".join(p.name for p in _subfolders(d)) if d.is_dir() else "not a folder"
            raise VitprintError(f"{d} is not an attribution development folder: expected real/<subset>/ and "
                                f"generated/<subset>/ side by side; found {found or 'no folders'}", "dev")
        if real or dev_generated:
            raise VitprintError("give the development folder or the real and labelled generated folders, not both",
                                ("dev", "real", "dev_generated"))
        real, dev_generated = d / "real", d / "generated"
    if test:
        t = Path(test)
        if not (t / "generated").is_dir():
            raise VitprintError(f"{t} is not an attribution test folder: expected generated/ inside it", "test")
        if generated:
            raise VitprintError("give the test folder or the generated pool, not both", ("test", "generated"))
        generated = t / "generated"
    if not real:
        raise VitprintError("no real subsets: give the real images (one sub-folder per subset) or a development "
                            "folder", ("real", "dev"))
    inp = AttributionInputs(subset_folders(real, "the real images"))
    if dev_generated:
        inp.dev = subset_folders(dev_generated, "the labelled generated images")
        _check_names(inp.dev, inp.subsets, f"the labelled generated images {dev_generated}")
    if generated:
        pool = Path(generated)
        if not pool.is_dir():
            raise VitprintError(f"not a folder: {pool}")
        subs, loose = _subfolders(pool), _loose_images(pool)
        if subs and loose:
            raise VitprintError(f"the generated pool {pool} mixes loose images with sub-folders; give a flat folder, "
                                "or one sub-folder per subset")
        if subs:
            inp.pool_subsets = subset_folders(pool, "the generated pool")
            _check_names(inp.pool_subsets, inp.subsets, f"the generated pool {pool}")
        inp.pool = pool
        _check_ids(list_images(pool), pool)
    if inp.pool is None and inp.dev is None:
        raise VitprintError("nothing to attribute: give the generated pool, or labelled generated images to "
                            "measure the methods on", ("generated", "dev_generated", "test"))
    return inp
