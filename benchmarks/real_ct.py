"""Real-CT membership case: copies of member slices against their neighbouring slices.

Builds a challenge-shaped development and test folder from one real CT
volume: axial slices in the lung window, members and non-members from
interleaved slabs (so every member's neighbours are non-members), and
generated images that are perturbed copies of the members (shifted by
4-8 px, re-windowed, with noise and a little blur: what a generator that
memorised does to a slice). Then runs ``vitprint detect`` on it and scores
the run file against the hidden truth. With ``--source unused`` or ``--source other`` the copies are of
slices in no folder or of another patient: controls with nothing leaked, where the verdict must not say
"Leak detected" (with ``unused``, each copied slice lies between a member and a non-member, the member
below it as often as above, so members also neighbour members and non-members non-members; ``DEALING``).

Public volumes that pip can fetch (nothing is downloaded by this script):

    pip download totalsegmentator==2.18.0 --no-deps --no-binary totalsegmentator -d .
    tar xzf totalsegmentator-2.18.0.tar.gz totalsegmentator-2.18.0/tests/reference_files/aorta_report/example_ct.nii.gz

(191 slices at 1.5 mm, neighbours very alike), or pyradiomics 3.0.1's
``data/lung2_image.nrrd`` (61 slices at 5 mm; reading NRRD needs ``pynrrd``).

    python benchmarks/real_ct.py VOLUME --out runs/realct [--detect-args "..."]
"""

from __future__ import annotations

import argparse
import io
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter, map_coordinates, rotate

from vitprint.cli import main as vitprint_main
from vitprint.data.orientation import ORIENTATIONS
from vitprint.evaluation.truth import evaluate_run

sys.path.insert(0, str(Path(__file__).parent))
from nrrd_to_nifti import nifti_affine  # noqa: E402


def load_volume(path: Path) -> np.ndarray:
    """``(slices, H, W)`` in HU, axial, from NIfTI (nibabel) or NRRD (pynrrd)."""
    import nibabel as nib

    if path.name.endswith(".nrrd"):  # its LPS header as NIfTI's RAS affine: the same anatomy as the NIfTI path
        import nrrd

        data, header = nrrd.read(str(path))
        img = nib.as_closest_canonical(nib.Nifti1Image(data, nifti_affine(header)))
    else:
        img = nib.as_closest_canonical(nib.load(str(path)))
    data = np.asarray(img.dataobj, dtype=np.float32)  # x, y, z (RAS)
    return np.transpose(data, (2, 1, 0))[:, ::-1].copy()


def halfway_slices(volume: np.ndarray) -> np.ndarray:
    """``volume`` with a slice between each pair of neighbours: their mean, truncated to whole HU."""
    out = np.empty((2 * len(volume) - 1,) + volume.shape[1:], np.float32)
    out[0::2] = volume
    out[1::2] = np.trunc(0.5 * (volume[:-1] + volume[1:]))
    return out


def window(hu: np.ndarray, centre: float = -600.0, width: float = 1500.0) -> np.ndarray:
    return np.clip((hu - (centre - width / 2)) / width * 255.0, 0, 255)


def square(img: np.ndarray, size: int = 256, fill: float = 0.0) -> np.ndarray:
    """Pad to a square (air around the body) and resize to ``size``."""
    h, w = img.shape
    s = max(h, w)
    out = np.full((s, s), fill, np.float32)
    out[(s - h) // 2:(s - h) // 2 + h, (s - w) // 2:(s - w) // 2 + w] = img
    return np.asarray(Image.fromarray(out).resize((size, size), Image.BILINEAR))


HARD = {"blur": 2.5, "rotation": 5.0, "noise": 10.0}
COPIES = ("mild", "hard", "warped", "rewindowed")


def _warp(img: np.ndarray, rng: np.random.Generator, zoom: bool = True, elastic: bool = True) -> np.ndarray:
    """Magnified or shrunk by up to 10% about the centre (a crop-and-resize) and/or elastically deformed
    (a smooth displacement field of up to 6 px), bilinear."""
    s = img.shape[0]
    zoom = rng.uniform(0.9, 1.1) if zoom else 1.0
    field = [gaussian_filter(rng.normal(0, 1, (s, s)), 16) for _ in range(2)] if elastic else [0.0, 0.0]
    field = [6.0 * f / (np.abs(f).max() + 1e-9) for f in field]
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64)
    c = (s - 1) / 2
    return map_coordinates(img, [(yy - c) / zoom + c + field[0], (xx - c) / zoom + c + field[1]], order=1, mode="nearest")


def _shift(img: np.ndarray, rng: np.random.Generator, low: int = 4, high: int = 8) -> np.ndarray:
    """Rolled by ``low``-``high`` px (4-8 by default) along each axis, either way."""
    dy, dx = rng.choice([-1, 1], 2) * rng.integers(low, high + 1, 2)
    return np.roll(img, (int(dy), int(dx)), (0, 1))


def _jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(buf), np.float32)


def copy_of(hu_slice: np.ndarray, rng: np.random.Generator, size: int, kind: str = "mild",
            shift: tuple[int, int] = (4, 8)) -> np.ndarray:
    """A generator-like copy: re-windowed, shifted ``shift`` px (4-8), slightly blurred, noisy.

    ``hard``: also turned by up to 5 degrees, blurred with sigma 2.5 px and noise sigma 10.
    ``warped``: also a gamma change (0.7-1.4), turned by up to 5 degrees, magnified 0.9-1.1 and
    elastically deformed, blurred up to sigma 1.5, noise sigma 6, saved as JPEG at quality 30.
    ``rewindowed``: as ``mild`` but in a window farther from the real images' (centre 60-200 HU off -600,
    width 10-40% off 1500, either way: what a generator trained on differently windowed slices gives back).
    """
    if kind == "rewindowed":
        off, scale = rng.choice([-1, 1], 2) * np.array([rng.uniform(60, 200), rng.uniform(0.1, 0.4)])
        img = window(hu_slice, -600 + off, 1500 * (1 + scale))
    else:
        img = window(hu_slice, -600 + rng.uniform(-60, 60), 1500 * rng.uniform(0.9, 1.1))
    img = square(img, size)
    if kind == "warped":
        img = 255 * (img / 255) ** rng.uniform(0.7, 1.4)
    if kind in ("hard", "warped"):
        img = rotate(img, rng.uniform(-HARD["rotation"], HARD["rotation"]), reshape=False, order=1, mode="nearest")
    if kind == "warped":
        img = _warp(img, rng)
    img = _shift(img, rng, *shift)
    img = gaussian_filter(img, HARD["blur"] if kind == "hard" else rng.uniform(0.0, 1.5 if kind == "warped" else 0.8))
    noise = {"hard": HARD["noise"], "warped": 6.0}.get(kind) or rng.uniform(2, 6)
    img = img + rng.normal(0, noise, img.shape)
    if kind == "warped":
        img = _jpeg(img, 30)
    return np.clip(img, 0, 255).astype(np.uint8)


SOURCES = ("members", "unused", "other")


def lung_slices(volume: np.ndarray) -> list[int]:
    return [i for i in range(len(volume)) if (volume[i] < -500).mean() > 0.05]


# The order slabs are dealt in: 1 = member, 0 = non-member, 2 = in no folder. With slices in no folder (the
# ``unused`` control) each of them lies between a member and a non-member, the member below it as often as
# above: a slice can be nearer its neighbour on one side along a stretch of the scan (the anatomy changing
# faster one way), and copies of it would then be nearer the group always dealt on that side. (So with
# them, a member's other neighbour is a member, and a non-member's a non-member.) Each role appears equally
# often in each order.
DEALING = {2: (0, 1), 3: (1, 2, 0, 0, 2, 1)}


def dealt_slices(volume: np.ndarray, per_role: int, source: str, slab: int) -> tuple[list, list, list]:
    """Slice indices of the members, the non-members and the slices in no folder (those only with ``source``
    ``unused``, whose copies they are): slabs of ``slab`` lung slices from the middle of the volume, dealt in
    turn (``DEALING``)."""
    order = DEALING[3 if source == "unused" else 2]
    per_cycle = slab * order.count(1)  # each role's slices in one cycle of the order
    n_need = len(order) * slab * -(-per_role // per_cycle)  # whole cycles: every role gets at least per_role
    lungs = lung_slices(volume)
    if len(lungs) < n_need:
        raise SystemExit(f"the volume has {len(lungs)} slices with lung, {n_need} are needed")
    start = (len(lungs) - n_need) // 2
    chosen = lungs[start:start + n_need]
    role = [order[(k // slab) % len(order)] for k in range(n_need)]
    return tuple([s for s, r in zip(chosen, role) if r == want][:per_role] for want in (1, 0, 2))


def build_case(volume: np.ndarray, out: Path, n_dev: int, n_test: int, n_generated: int, slab: int,
               seed: int, size: int = 256, copies: str = "mild", separate: bool = False,
               source: str = "members", other: np.ndarray | None = None, novel: float = 0.0,
               shift: tuple[int, int] = (4, 8), mirrored: float = 0.0, turn: str = "as stored") -> dict[str, int]:
    """Write ``out/dev`` and ``out/test`` (challenge layout); returns the truth of the test images.

    ``separate``: the test ``generated/`` holds other copies (new draws of the same degradation) of the
    same members instead of the development set's, as when the two phases sample the generator apart.
    ``source``: what the generated images copy. ``members`` (a leak); ``unused`` (a control with nothing
    leaked: slabs are dealt to members, non-members and a third role in no folder, and the copies are of
    that third role, each of whose slabs lies between a member and a non-member, the member below it as
    often as above, ``DEALING``); ``other`` (a control: copies of the
    slices of ``other``, another patient's volume). ``novel``: with ``members``, that share of the generated
    images are no copy of any folder's image but of ``other``'s slices (what a generator makes besides its
    copies); every member is still copied. ``mirrored``: that share of the generated images (each at
    random) is mirrored left to right, as a generator trained with random flips gives its members back.
    ``turn`` (one of ``vitprint.data.orientation.ORIENTATIONS``): every generated image is then stored so
    turned, as slices exported under another orientation convention than the real images."""
    rng = np.random.default_rng(seed)
    per_role = n_dev + n_test
    members, non, unused = dealt_slices(volume, per_role, source, slab)
    if source == "other":
        copied, copied_from = (lung_slices(other) if other is not None else []), other
        if not copied:
            raise SystemExit("--source other needs --other-volume, a volume with lung slices")
    else:
        copied, copied_from = (members if source == "members" else unused), volume
    rng.shuffle(members)
    rng.shuffle(non)
    split = {"dev_used": members[:n_dev], "dev_not": non[:n_dev], "test_used": members[n_dev:], "test_not": non[n_dev:]}
    if out.exists():
        shutil.rmtree(out)
    folders = {"dev_used": out / "dev" / "real_used", "dev_not": out / "dev" / "real_not_used"}
    for f in [*folders.values(), out / "dev" / "generated", out / "test" / "real_unknown"]:
        f.mkdir(parents=True)

    def save(img, path):
        Image.fromarray(np.asarray(img, np.uint8)).save(path)

    for key, folder in folders.items():
        for i, s in enumerate(split[key]):
            save(square(window(volume[s]), size), folder / f"{key}_{i:04d}.png")
    truth = {}
    test = [(s, 1) for s in split["test_used"]] + [(s, 0) for s in split["test_not"]]
    for i, j in enumerate(rng.permutation(len(test))):
        s, label = test[j]
        save(square(window(volume[s]), size), out / "test" / "real_unknown" / f"real_unknown_{i:04d}.png")
        truth[f"real_unknown_{i:04d}"] = label
    # with members: the generator saw every member, development and test
    n_copies = n_generated - int(round(novel * n_generated))
    if novel and n_copies < len(copied):
        raise SystemExit(f"--novel {novel} leaves {n_copies} copies for {len(copied)} members: give more --generated")
    novel_from = lung_slices(other) if novel else []
    if novel and not novel_from:
        raise SystemExit("--novel needs --other-volume, a volume with lung slices")

    flips = np.random.default_rng((seed, 1))

    def generated_set(folder):
        folder.mkdir(exist_ok=True)
        order = rng.permutation(n_generated) if novel else range(n_generated)  # copies and novel images mixed
        for i, j in enumerate(order):
            img = (copy_of(copied_from[copied[j % len(copied)]], rng, size, copies, shift) if j < n_copies else
                   copy_of(other[novel_from[rng.integers(len(novel_from))]], rng, size, copies, shift))
            if mirrored and flips.random() < mirrored:  # its own draws: the copies are those of the same case without
                img = img[:, ::-1]
            if turn != "as stored":
                img = ORIENTATIONS[turn](torch.from_numpy(np.ascontiguousarray(img))).numpy()
            save(img, folder / f"gen_{i:05d}.png")

    generated_set(out / "dev" / "generated")
    if separate:
        generated_set(out / "test" / "generated")
    else:
        shutil.copytree(out / "dev" / "generated", out / "test" / "generated")
    (out / "truth.csv").write_text("".join(f"{k},{v}\n" for k, v in truth.items()))
    return truth


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("volume", type=Path)
    p.add_argument("--out", type=Path, default=Path("runs/realct"))
    p.add_argument("--dev", type=int, default=60, help="development images per side (default: 60)")
    p.add_argument("--test", type=int, default=30, help="test images per side (default: 30)")
    p.add_argument("--generated", type=int, default=500)
    p.add_argument("--slab", type=int, default=1, help="slices per interleaved slab (default: 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--copies", choices=COPIES, default="mild",
                   help="how the generated copies are degraded (see copy_of; default: mild)")
    p.add_argument("--shift", type=int, nargs=2, default=(4, 8), metavar=("LOW", "HIGH"),
                   help="the copies are rolled by LOW-HIGH px along each axis, either way (default: 4 8)")
    p.add_argument("--separate-generated", action="store_true",
                   help="the test generated/ folder holds other copies than the development one")
    p.add_argument("--source", choices=SOURCES, default="members",
                   help="what the generated images copy: the members (a leak), slices in no folder that "
                        "neighbour both groups alike ('unused', a control) or another patient's volume "
                        "('other', a control; needs --other-volume). Default: members")
    p.add_argument("--other-volume", type=Path,
                   help="the other patient's volume for --source other or --novel")
    p.add_argument("--novel", type=float, default=0.0,
                   help="share of the generated images that copy no folder's slice but the other volume's "
                        "(with --source members; needs --other-volume; default: 0)")
    p.add_argument("--mirrored", type=float, default=0.0,
                   help="share of the generated images mirrored left to right, each at random (a generator "
                        "trained with random flips; default: 0)")
    p.add_argument("--turn", choices=list(ORIENTATIONS), default="as stored",
                   help="store every generated image so turned (another orientation convention than the real "
                        "images'; default: as stored)")
    p.add_argument("--thin", action="store_true",
                   help="put a slice halfway between each pair of neighbouring slices (their mean, in whole HU), "
                        "halving the spacing: a stand-in for thin-slice CT, where a member's neighbours are "
                        "nearly the member")
    p.add_argument("--detect-args", default="--preset tiny", help="extra options for vitprint detect")
    a = p.parse_args(argv)

    def read(path: Path) -> np.ndarray:  # an unreadable volume or NRRD header: one line, exit status 2
        try:
            return load_volume(path)
        except Exception as exc:
            p.error(f"cannot read the volume {path}: {exc}")

    volume = read(a.volume)
    if a.thin:
        volume = halfway_slices(volume)
    if not 0 <= a.shift[0] <= a.shift[1]:
        p.error(f"--shift needs 0 <= LOW <= HIGH, not {a.shift[0]} {a.shift[1]}")
    if not 0 <= a.novel < 1:
        p.error(f"--novel is a share in [0, 1), not {a.novel}")
    if not 0 <= a.mirrored <= 1:
        p.error(f"--mirrored is a share in [0, 1], not {a.mirrored}")
    if a.novel and a.source != "members":
        p.error("--novel goes with --source members")
    if (a.source == "other" or a.novel > 0) != (a.other_volume is not None):
        p.error("--other-volume goes with --source other or --novel, and only with them")
    other = read(a.other_volume) if a.other_volume else None
    truth = build_case(volume, a.out / "data", a.dev, a.test, a.generated, a.slab, a.seed, copies=a.copies,
                       separate=a.separate_generated, source=a.source, other=other,
                       novel=a.novel, shift=tuple(a.shift), mirrored=a.mirrored, turn=a.turn)
    shutil.rmtree(a.out / "detect", ignore_errors=True)  # this script's own output: a fresh run each time
    t0 = time.perf_counter()
    rc = vitprint_main(["detect", "--dev", str(a.out / "data" / "dev"), "--test", str(a.out / "data" / "test"),
                        "--out", str(a.out / "detect"), "--no-cache", *shlex.split(a.detect_args)])
    seconds = time.perf_counter() - t0
    if rc != 0:
        return rc
    run, missing = evaluate_run(a.out / "detect" / "run.txt", truth)
    m = run["run"]["metrics"]
    summary = json.loads((a.out / "detect" / "evaluation.json").read_text())
    result = {"volume": a.volume.name, "slices": int(len(volume)), "slab": a.slab, "copies": a.copies,
              "separate_generated": a.separate_generated, "source": a.source, "novel": a.novel, "shift": list(a.shift),
              "mirrored": a.mirrored, "turn": a.turn, "thin": a.thin, "detect_args": a.detect_args,
              # with --thin, the share of the members that are in-between slices (the mean of their neighbours)
              "members_in_between": (float(np.mean([m % 2 == 1 for m in dealt_slices(
                  volume, a.dev + a.test, a.source, a.slab)[0]])) if a.thin else None),
              "other_volume": a.other_volume.name if a.other_volume else None, "seconds": seconds,
              "test_kappa": m["kappa"], "test_accuracy": m["accuracy"], "missing": missing,
              "decision": summary.get("run_decision_rule"), "verdict": summary.get("verdict", {}).get("sentence"),
              "development_auc": {n: r["metrics"]["roc_auc"] for n, r in summary.get("development", {}).items()}}
    (a.out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
