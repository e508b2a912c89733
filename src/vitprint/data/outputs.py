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
STAGING = ".staging-"


def finish_swap(out: Path) -> None:
    """Complete a swap a crash interrupted (idempotent), and drop staging folders no journal names."""
    out = Path(out)
    journal = out / JOURNAL
    if journal.is_file():
        plan = json.loads(journal.read_text())
        stage = out / plan["stage"]
        for name in plan["produced"]:
            src, dst = stage / name, out / name
            if not src.exists():
                continue  # moved before the crash
            if dst.is_dir() and not dst.is_symlink():
                shutil.rmtree(dst)
            os.replace(src, dst)
        for name in plan["removed"]:
            dst = out / name
            if dst.is_dir() and not dst.is_symlink():
                shutil.rmtree(dst)
            else:
                dst.unlink(missing_ok=True)
        shutil.rmtree(stage, ignore_errors=True)
        journal.unlink()
    for leftover in out.glob(STAGING + "*") if out.is_dir() else ():
        log.debug("removing %s, the outputs of a job that stopped before it finished", leftover)
        shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def replaced_outputs(out: str | Path, names: tuple[str, ...]):
    """Yield a staging folder; when the block ends without an error, the files and folders ``names``
    in ``out`` become exactly what the staging folder holds (a name it lacks is removed from ``out``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    finish_swap(out)
    stage = Path(tempfile.mkdtemp(dir=out, prefix=STAGING))
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    produced = [n for n in names if (stage / n).exists()]
    plan = {"stage": stage.name, "produced": produced, "removed": [n for n in names if n not in produced]}
    atomic_write(out / JOURNAL, lambda tmp: Path(tmp).write_text(json.dumps(plan)))
    finish_swap(out)
