"""How the generated images of saved cases vote on their orientation (``vitprint.data.orientation``).

For each case folder in the challenge's layout (``dev/generated``, ``dev/real_used``,
``dev/real_not_used``, ``test/real_unknown``, and ``test/generated`` where it holds other images),
every generated set votes against all the case's real images, as ``vitprint detect`` has them vote;
``--phantoms`` adds the benchmark's phantoms: shifted copies (its ``--perturb``), as stored and upside
down. Prints the three largest shares, the real images' own share for "as stored", the turns reported
and the turn a job would undo; ``--out`` keeps them as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from vitprint.data.folders import list_images
from vitprint.data.imageset import load_images
from vitprint.data.orientation import check_orientation
from vitprint.errors import VitprintError

REAL = ("dev/real_used", "dev/real_not_used", "test/real_unknown")


def _read(folder: Path, size: int) -> np.ndarray:
    return np.asarray(load_images(list_images(folder), size, cache_dir=None, show_progress=False).pixels)


def case_sets(root: Path, size: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``name -> (generated, real)`` for one case folder."""
    real = np.concatenate([_read(root / sub, size) for sub in REAL if (root / sub).is_dir()])
    sets = {f"{root} (development)": (_read(root / "dev" / "generated", size), real)}
    test = root / "test" / "generated"
    if test.is_dir():
        gen = _read(test, size)
        if not np.array_equal(gen, sets[f"{root} (development)"][0]):
            sets[f"{root} (test)"] = (gen, real)
    return sets


def phantom_sets() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from vitprint.benchmark import SCALES, patients, perturb

    real = patients(0, 64, SCALES["cpu"], 7)
    shifted = perturb(np.concatenate([real[:32]] * 4), 0)
    return {"phantoms, shifted copies": (shifted, real),
            "phantoms, shifted copies upside down": (np.ascontiguousarray(shifted[:, ::-1]), real)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("cases", nargs="*", type=Path, help="case folders (dev/ and test/ in the challenge's layout)")
    p.add_argument("--phantoms", action="store_true", help="also the benchmark's shifted phantom copies")
    p.add_argument("--size", type=int, default=64, help="size the images are read at (default: 64)")
    p.add_argument("--out", type=Path)
    a = p.parse_args(argv)
    if not a.cases and not a.phantoms:
        p.error("give case folders or --phantoms")
    sets = {}
    for root in a.cases:
        if not (root / "dev" / "generated").is_dir():
            p.error(f"{root}: no dev/generated folder")
        if not any((root / sub).is_dir() for sub in REAL):
            p.error(f"{root}: none of {', '.join(REAL)}")
        try:
            sets.update(case_sets(root, a.size))
        except VitprintError as exc:
            p.error(f"{root}: {exc}")
    if a.phantoms:
        sets.update(phantom_sets())
    rows = []
    for name, (gen, real) in sets.items():
        check = check_orientation(gen, real)
        top = sorted(check.shares.items(), key=lambda kv: -kv[1])[:3]
        rows.append({"set": name, **check.to_dict(), "turned_back": check.set_turns()})
        print(f"{name}: " + ", ".join(f"{k} {v:.0%}" for k, v in top)
              + f" | real among themselves as stored {check.baseline['as stored']:.0%}"
              + f" | reported: {', '.join(check.turned()) or 'none'} | turned back: {', '.join(check.set_turns()) or 'no'}")
    if a.out:
        a.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
