"""A job's output files replaced as one set.

The new files are written into a staging folder inside the output folder;
then a journal naming them (and the old outputs the new set lacks) is
written, and the files are moved into place. A crash while writing leaves
the old set untouched; a crash while moving leaves the journal, and the next
job into the folder finishes the move before anything else. Either way the
folder never holds new files beside old ones from another job.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from vitprint.data.imageset import atomic_write

log = logging.getLogger(__name__)

JOURNAL = ".swap.json"
MANIFEST = ".vitprint-outputs.json"  # the names the last job wrote: only these are ever removed
STAGING = ".staging-"


def _merge(src: Path, dst: Path) -> None:
    """Move the files of folder ``src`` into folder ``dst``, replacing those of the same name."""
    for item in src.rglob("*"):
        if item.is_file():
            target = dst / item.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(item, target)
    shutil.rmtree(src, ignore_errors=True)


def finish_swap(out: Path) -> None:
    """Complete a swap a crash interrupted (idempotent), and drop staging folders no journal names."""
    out = Path(out)
    journal = out / JOURNAL
    if journal.is_file():
        plan = json.loads(journal.read_text())
        stage = out / plan["stage"]
        ours = set(plan["previous"])
        for name in plan["produced"]:
            src, dst = stage / name, out / name
            if not src.exists():
                continue  # moved before the crash
            if dst.is_dir() and not dst.is_symlink():
                if name in ours:
                    shutil.rmtree(dst)
                else:  # a folder vitprint did not write: add to it, never delete it
                    _merge(src, dst)
                    continue
            os.replace(src, dst)
        owned = [n for n in plan["produced"] if n not in plan["merged"]]
        for name in plan["removed"]:  # names the previous job wrote and this one did not
            dst = out / name
            if dst.is_dir() and not dst.is_symlink():
                shutil.rmtree(dst)
            else:
                dst.unlink(missing_ok=True)
        atomic_write(out / MANIFEST, lambda tmp: Path(tmp).write_text(json.dumps(owned)))
        shutil.rmtree(stage, ignore_errors=True)
        journal.unlink()
    for leftover in out.glob(STAGING + "*") if out.is_dir() else ():
        log.debug("removing %s, the outputs of a job that stopped before it finished", leftover)
        shutil.rmtree(leftover, ignore_errors=True)


def swap_pending(folder: str | Path) -> bool:
    """Whether ``folder`` is halfway through replacing its outputs (a job stopped while moving them in)."""
    return (Path(folder) / JOURNAL).is_file()


@contextlib.contextmanager
def replaced_outputs(out: str | Path, names: tuple[str, ...]):
    """Yield a staging folder; when the block ends without an error, the files and folders ``names``
    in ``out`` become what the staging folder holds. An output the previous job wrote (its manifest) and
    this one does not is removed; anything else in ``out`` is left alone."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    finish_swap(out)
    try:
        previous = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        previous = []
    stage = Path(tempfile.mkdtemp(dir=out, prefix=STAGING))
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    produced = [n for n in names if (stage / n).exists()]
    merged = [n for n in produced if (out / n).is_dir() and n not in previous]  # folders that are not ours
    plan = {"stage": stage.name, "produced": produced, "previous": previous, "merged": merged,
            "removed": [n for n in previous if n in names and n not in produced]}
    atomic_write(out / JOURNAL, lambda tmp: Path(tmp).write_text(json.dumps(plan)))
    finish_swap(out)
