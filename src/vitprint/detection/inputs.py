"""Finding the real and generated images of a detection job.

The ImageCLEFmedical GANs Subtask 1 layout is found automatically: a
development folder holds ``generated/``, ``real_used/`` and ``real_not_used/``;
a test folder holds ``generated/`` and ``real_unknown/``. Explicit folders cover
any other case.

With both folders, the development and test ``generated/`` folders are kept
apart (each real image is scored against the generated images of its own
folder: the two may come from different generators; the job merges them
when they hold the same images), unless they are pooled on request; and the
development ``real_not_used/`` images become the reference set (real images
the generator never saw) for the calibrated scores, unless turned off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vitprint.data.folders import list_images
from vitprint.errors import VitprintError

DEV = ("generated", "real_used", "real_not_used")
TEST = ("generated", "real_unknown")


@dataclass
class Inputs:
    """Folders of one job. Labelled reals are ``members`` (used) and ``non_members``."""

    generated: list[Path]
    members: list[Path] = field(default_factory=list)
    non_members: list[Path] = field(default_factory=list)
    unknown: list[Path] = field(default_factory=list)
    reference: list[Path] = field(default_factory=list)
    test_generated: list[Path] = field(default_factory=list)  # the unknown images' own generated set, if apart
    reference_from_dev: bool = False  # the reference is the development real_not_used/ images

    @property
    def labelled(self) -> bool:
        return bool(self.members) and bool(self.non_members)


def challenge_folder(root: str | Path) -> dict[str, Path]:
    """The sub-folders of a development or test folder, with an error saying what is expected."""
    root = Path(root)
    if not root.is_dir():
        raise VitprintError(f"not a folder: {root}")
    present = {p.name for p in root.iterdir() if p.is_dir()}
    for layout in (DEV, TEST):
        if set(layout) <= present:
            return {name: root / name for name in layout}
    raise VitprintError(
        f"{root} is not a challenge folder: expected generated/, real_used/, real_not_used/ "
        f"(development) or generated/, real_unknown/ (test); found {', '.join(sorted(present)) or 'no folders'}"
    )


def resolve_inputs(dev: str | None = None, test: str | None = None, generated=(), members=(), non_members=(),
                   unknown=(), reference=(), pool_generated: bool = False, dev_reference: bool = True) -> Inputs:
    """Combine challenge folders and explicit folders into one job, checking it makes sense.

    ``pool_generated``: with ``dev`` and ``test``, one generated set of both folders (default: apart).
    ``dev_reference``: with ``dev`` and ``test`` and no ``reference``, the development not-used images
    are the reference set.
    """
    inp = Inputs([Path(p) for p in generated], [Path(p) for p in members], [Path(p) for p in non_members],
                 [Path(p) for p in unknown], [Path(p) for p in reference])
    if dev:
        d = challenge_folder(dev)
        if "real_used" not in d:
            raise VitprintError(f"the development folder {dev} must hold real_used/ and real_not_used/ (it looks like a "
                                "test folder)", "dev")
        inp.generated.append(d["generated"])
        inp.members.append(d["real_used"])
        inp.non_members.append(d["real_not_used"])
    if test:
        t = challenge_folder(test)
        if "real_unknown" not in t:
            raise VitprintError(f"the test folder {test} must hold real_unknown/ (it looks like a development folder)",
                                "test")
        if not dev:
            inp.generated.append(t["generated"])
        elif t["generated"].resolve() != d["generated"].resolve():
            if pool_generated:
                inp.generated.append(t["generated"])  # every real image against all generated images as one set
            else:
                inp.test_generated.append(t["generated"])
        inp.unknown.append(t["real_unknown"])
        if dev and dev_reference and not inp.reference:
            inp.reference.append(d["real_not_used"])
            inp.reference_from_dev = True
    if not inp.generated:
        raise VitprintError("no generated images: give the challenge's folders or generated-image folders",
                            ("dev", "test", "generated"))
    if bool(inp.members) != bool(inp.non_members):
        raise VitprintError("labelled real images need both members (used) and non-members (not used)",
                            ("members", "non_members"))
    if not inp.labelled and not inp.unknown:
        raise VitprintError("no real images to score: give members and non-members, or unknown images",
                            ("members", "non_members", "unknown"))
    for p in [*inp.generated, *inp.test_generated, *inp.members, *inp.non_members, *inp.unknown, *inp.reference]:
        if not p.is_dir():
            raise VitprintError(f"not a folder: {p}")
    for p in [*inp.members, *inp.non_members, *inp.unknown]:
        _check_stems(p)
    for p in inp.unknown:
        _check_run_ids(p)
    return inp


def _check_run_ids(folder: Path) -> None:
    """A run file line is ``<id>,<0|1>``: an id with a comma or a line break cannot be written."""
    try:
        files = list_images(folder)
    except VitprintError:
        return
    bad = [f.name for f in files if any(c in f.name for c in ",\n\r")]
    if bad:
        raise VitprintError(f"{len(bad)} image name(s) in {folder} cannot be ids in a run file (a comma or a line "
                            f"break), e.g. {bad[0]!r}; rename them")


def _check_stems(folder: Path) -> None:
    """Ids are file stems: two files with one stem (a.png, a.jpg) in a folder would share an id."""
    seen: dict[tuple[str, str], Path] = {}
    try:
        files = list_images(folder)
    except VitprintError:
        return  # an empty folder is reported where the images are read
    for f in files:
        key = (f.parent.as_posix(), f.stem)
        if key in seen:
            raise VitprintError(f"two images in {f.parent} share the id {f.stem!r}: {seen[key].name} and {f.name}")
        seen[key] = f
