"""The membership benchmark: how well each detector finds training images, where the truth is known.

For each generator family and member-set size, fresh phantom patients are split
into members and non-members (equal counts, disjoint patients); a generator is
trained on the members only and sampled; every detector and the combiner score
the real images; thresholds (and the combiner) are fitted on one half of the
reals and evaluated on the other, as the challenge's development/test split
works. Each cell is repeated over seeds and reported as a mean with a 95%
t-interval (one seed: a bootstrap interval of the held-out ROC-AUC). A second part measures scoring speed and memory against the
number of generated images.

Results are appended cell by cell to a JSON file, so an interrupted run loses
nothing and continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import platform
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vitprint.config import DataConfig, OptimConfig, RunConfig
from vitprint.data.imageset import ImageSet, atomic_write
from vitprint.data.phantoms import CLASSES, phantom
from vitprint.data.readers import WINDOWS, ReadOptions, UnreadableImage, read_file, resize_to_uint8
from vitprint.membership.decisions import Combiner, Threshold
from vitprint.membership.detectors.align_nn import COARSE_GRID
from vitprint.membership.knn import knn_distances, pixel_vectors
from vitprint.membership.scoring import ScoreConfig, compute_scores
from vitprint.api.assess import AssessConfig, assess
from vitprint.errors import VitprintError
from vitprint.evaluation.bench_report import EARLIER_CT_ORDER, family_key
from vitprint.evaluation.metrics import auc_interval, binary_metrics
from vitprint.inference import encode
from vitprint.models.presets import model_config
from vitprint.progress import bar
from vitprint.training.autoencoder import train_autoencoder
from vitprint.training.generator import load_generator, sample, train_generator
from vitprint.training.pretrain import PRETRAIN_OPTIM, pretrain

log = logging.getLogger(__name__)

METRICS = ("roc_auc", "tpr_at_1pct_fpr", "kappa", "accuracy")
SPEED_REPEATS = 3  # timed searches per scoring-speed row, after one untimed


@dataclass(frozen=True)
class Scale:
    """Everything that sets a benchmark's size and cost."""

    preset: str
    image_size: int
    phantom_size: int
    sizes: tuple[int, ...]
    seeds: int
    families: tuple[str, ...]
    gen_steps: int
    n_generated: int
    ae_epochs: int
    pretrain_per_class: int
    pretrain_epochs: int
    batch_size: int
    lr: float
    speed_sizes: tuple[int, ...]
    speed_queries: int
    detector_options: tuple[tuple[str, Any], ...] = ()


SCALES = {
    # Seconds: for the test suite.
    "toy": Scale("micro", 32, 32, (8, 16), 2, ("dcgan", "vae"), 6, 24, 1, 3, 1, 8, 5e-4, (100, 200), 16,
                 (("align_size", 32), ("max_rotation", 0.0), ("copy_size", 32), ("copy_steps", 5), ("copy_width", 8))),
    # 72 minutes on 2 CPU cores, measured as one run with every row the benchmark scores (2026-12-07; 86 and 96
    # in earlier runs, with slower threshold fits and, by the unchanged parts' times, a slower machine; per cell:
    # 64 members 3.1-4.3 min, 256 members 4.0-5.0 min). `--sizes 64 256 1024` adds those cells: 10.7 min for a
    # 1,024-member VAE cell (2026-12-07, before the faster threshold fits; align_nn 172 s of it), about 2.3 h in
    # all by cell times.
    # At 32 px the patient-specific detail is gone and nothing leaks; 64 px keeps it.
    # align_nn keeps its grid of before 2026-12-07 here (2.5 degrees, 5%, 32-px tiles at 256 px): at 64 px the
    # finer default costs several times the search and moved nothing on the VAE cells (docs/benchmarks.md,
    # "align_nn's pose grid"). Its shift reach is the default (10% since 2026-12-07, 6% before: the same
    # ROC-AUC to the 4th decimal on the six unperturbed VAE-64 cells; the perturbed cells were rerun).
    "cpu": Scale("tiny", 64, 64, (64, 256), 3, ("dcgan", "vae"), 1000, 512, 5, 40, 20, 32, 3e-4,
                 (1_000, 10_000, 100_000), 256, (("align_size", 64), ("copy_size", 64),
                                                 *COARSE_GRID.items())),
    # The seed's configuration at 256 px, for a GPU.
    "gpu": Scale("seed", 256, 256, (64, 256, 1024, 4096), 3, ("dcgan", "vae", "ddpm"), 4000, 2048, 10, 100, 30, 64, 1e-4,
                 (1_000, 10_000, 100_000), 1024),
}


def _model_cfg(scale: Scale):
    return model_config(scale.preset, image_size=scale.image_size,
                        vit_img_size=min(scale.image_size, model_config(scale.preset).vit_img_size))


def patients(start: int, n: int, scale: Scale, stream: int) -> np.ndarray:
    """``(n, S, S)`` uint8 phantoms of distinct patients ``start .. start+n-1`` (mixed classes)."""
    out = np.empty((n, scale.image_size, scale.image_size), np.uint8)
    for k in range(n):
        i = start + k
        px = phantom(np.random.default_rng([stream, 11, i]), CLASSES[i % len(CLASSES)], scale.phantom_size)
        out[k] = resize_to_uint8(px.astype(np.float32) / 255.0, scale.image_size)
    return out


def ct_slices(volumes: list[str], size: int) -> list[np.ndarray]:
    """Per CT volume (a NIfTI file, or a multi-frame DICOM file), its axial slices in the lung window, in
    order, padded to a square with air and resized to ``(size, size)`` uint8."""
    out = []
    for path in volumes:
        try:
            slices = read_file(path, ReadOptions(window=WINDOWS["lung"]))
        except (OSError, UnreadableImage) as exc:
            raise VitprintError(f"cannot read the CT volume {path}: {exc}") from None
        if len(slices) < 3:
            raise VitprintError(f"{path} is not a CT volume (it holds {len(slices)} slice(s))")
        centre, width = WINDOWS["lung"]
        air = float(np.clip((-1000.0 - (centre - width / 2)) / width, 0, 1))  # what surrounds the body
        squared = []
        for img in slices:
            h, w = img.shape
            side = max(h, w)
            pad = np.full((side, side), air, np.float32)
            pad[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = img
            squared.append(resize_to_uint8(pad, size))
        out.append(np.stack(squared))
    return out


# The order real CT slices are dealt in along a volume (0 member, 1 non-member, 2 reference): member,
# non-member, reference, non-member, member, reference. Moved three slices along, the order swaps the members
# and the non-members and keeps the reference slices, so the layout has no side to favour either group,
# whichever way the scan's anatomy runs (a null cell's generator learns the reference slices). Every member's
# neighbouring slices are a non-member and a reference slice, the non-member below as often as above, and
# every member and every non-member has one reference slice beside it (the calibrated scores compare with
# the reference). The earlier order (member, non-member, reference) put every reference slice between a
# non-member below and a member above: along a stretch of a scan a slice can be nearer its neighbour on one
# side, so a null generator's copies of them could lean towards one group for the scan's reasons. An evenly
# spaced balanced order (member, non-member, reference, member, reference, non-member) leaves half the
# members with no reference slice beside them, and the calibrated pixel score then told the groups apart in
# a null cell (ROC-AUC 0.77 with nothing leaked).
CT_DEALING = (0, 1, 2, 1, 0, 2)
# Recorded with the cells, spelt out from the order itself (the report says what the orders it knows mean).
CT_DEALING_NAME = ", ".join(("member", "non-member", "reference")[r] for r in CT_DEALING)


def ct_roles(volumes: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Members, non-members and reference slices, ``n`` each, dealt along each volume in the order of
    ``CT_DEALING``, so a member's neighbouring slices are a non-member and a reference slice: the case a
    detector must get right on real CT, where a copy must be told from the slice next to its source."""
    dealt = [[], [], []]
    for vol in volumes:
        for i, img in enumerate(vol):
            dealt[CT_DEALING[i % len(CT_DEALING)]].append(img)
    have = min(len(d) for d in dealt)
    if n > have:
        total = sum(len(v) for v in volumes)
        raise VitprintError(f"the CT volume(s) hold {total} slices: at most {have} members per cell (members, "
                            f"non-members and reference slices are dealt in turn), not {n}", "sizes")
    return tuple(np.stack(d[:n]) for d in dealt)


BOUNDS = {"kappa": (-1.0, 1.0)}  # every other metric lies in [0, 1]


def mean_interval(values, bounds=(0.0, 1.0)) -> tuple[float, float, float]:
    """Mean and 95% t-interval over seeds, clipped to the metric's range (nan with one value)."""
    from scipy import stats

    v = np.asarray([x for x in values if not np.isnan(x)], float)
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(v.mean())
    if len(v) < 2:
        return m, float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return m, max(m - half, bounds[0]), min(m + half, bounds[1])


def heldout_split(labels: np.ndarray, seed: int) -> np.ndarray:
    """``(N,)`` True for the stratified half that fits thresholds, the combiner and supervised detectors."""
    rng = np.random.default_rng([seed, 3])
    dev = np.zeros(len(labels), bool)
    for c in (0, 1):
        idx = np.flatnonzero(labels == c)
        dev[rng.permutation(idx)[: len(idx) // 2]] = True
    return dev


def heldout_metrics(values: dict[str, np.ndarray], labels: np.ndarray, seed: int) -> dict[str, dict[str, float]]:
    """Fit thresholds (and the combiner) on one stratified half, evaluate on the other."""
    dev = heldout_split(labels, seed)
    test = ~dev
    names = list(values)
    X = np.stack([values[n] for n in names], 1)
    comb = Combiner(seed=seed).fit(X[dev], labels[dev])
    scored = {**values, "combined": comb.decision_function(X)}
    choice = comb.kept(names)
    out = {}
    family_wise = 1 - 0.05 / len(scored)  # every row at once (Bonferroni), for the null cells' control
    for name, s in scored.items():
        t = Threshold().fit(s[dev], labels[dev])
        m = binary_metrics(labels[test], t.predict(s[test]), s[test])
        out[name] = {"roc_auc": m["roc_auc"], "tpr_at_1pct_fpr": m["tpr_at_1pct_fpr"], "kappa": m["kappa"],
                     "accuracy": m["accuracy"],
                     # What one seed alone can say: a bootstrap interval over the held-out images.
                     "roc_auc_interval": list(auc_interval(labels[test], s[test], seed=seed)),
                     "roc_auc_interval_fw": list(auc_interval(labels[test], s[test], n_boot=4000, seed=seed,
                                                              level=family_wise))}
    out["combined"]["choice"] = choice  # what the combiner kept
    return out


def perturb(pixels: np.ndarray, seed: int) -> np.ndarray:
    """What a generator does to a slice it copies: a shift of 4-8% of the image, +-10% contrast, a brightness
    offset and noise (one random draw per image)."""
    rng = np.random.default_rng([seed, 17])
    out = np.empty_like(pixels)
    s = pixels.shape[-1]
    for i, img in enumerate(pixels):
        dy, dx = rng.choice([-1, 1], 2) * rng.integers(max(1, round(0.04 * s)), max(2, round(0.08 * s)) + 1, 2)
        x = np.roll(img.astype(np.float32), (int(dy), int(dx)), (0, 1)) * rng.uniform(0.9, 1.1) + rng.uniform(-10, 10)
        out[i] = np.clip(x + rng.normal(0, 3, x.shape), 0, 255).astype(np.uint8)
    return out


def copy_stats(generated: np.ndarray, members: np.ndarray, non_members: np.ndarray) -> tuple[float, int, int]:
    """``(copy rate, members copied, non-members copied)`` from one near-copy search: the share of
    generated images that are near-copies of a member beyond what chance gives (Meehan et al.'s idea as a
    rate), and how many members, and how many non-members (the chance level), have a near-copy.

    A generated image is near a real image when its nearest real image (members and non-members pooled,
    pixel L2) is closer than the 5th percentile of the members' distances to their nearest other member.
    The rate is the share near a member minus the share near a non-member (as many non-members as
    members, never seen by the generator): a generator that memorised nothing, or whose samples are
    merely typical, scores about 0 (slightly below, by chance, as often as above). The rate counts
    samples: a generator collapsed onto one member scores high with one member to find.
    """
    if len(members) != len(non_members):
        raise ValueError("the copy rate compares as many non-members as members")
    near, source = near_copies(generated, members, non_members)
    of_member = source < len(members)
    hit = np.unique(source[near])
    return (float((near & of_member).mean() - (near & ~of_member).mean()),
            int((hit < len(members)).sum()), int((hit >= len(members)).sum()))


def near_copies(generated: np.ndarray, members: np.ndarray, non_members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(near, source)``: per generated image, whether it is a near-copy (its nearest real image, members
    and non-members pooled, closer than the 5th percentile of the members' distances to their nearest other
    member) and the index of that nearest real image (members first, then non-members)."""
    d, idx = knn_distances(generated, np.concatenate([members, non_members]), k=1, metric="l2", progress=False)
    dm, _ = knn_distances(members, members, k=2, metric="l2", progress=False)
    return d[:, 0] < float(np.quantile(dm[:, 1], 0.05)), idx[:, 0]


def cell_images(n: int, seed: int, scale: Scale, null: bool = False,
                ct: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A cell's real images (``n`` members, then ``n`` non-members), its reference images and what its
    generator learns: the members, or for a ``null`` cell as many images the real ones do not hold."""
    if ct is not None:
        members, non_members, reference = ct_roles(ct, n)
        return np.concatenate([members, non_members]), reference, reference if null else members
    stream = 1000 * seed + n
    reals = patients(0, 2 * n, scale, stream)
    reference = patients(2 * n, n, scale, stream)  # other patients the generator never saw
    return reals, reference, patients(3 * n, n, scale, stream) if null else reals[:n]


def generator_epochs(n: int, scale: Scale) -> int:
    """Epochs over ``n`` training images that make the scale's generator steps (at least one)."""
    return max(1, math.ceil(scale.gen_steps * scale.batch_size / n))


def train_and_sample(family: str, trained_on: np.ndarray, seed: int, scale: Scale, work: Path) -> np.ndarray:
    """Train the scale's ``family`` generator on ``trained_on`` in ``work``; its ``scale.n_generated`` samples."""
    train_generator(ImageSet.from_pixels(trained_on, "train"),
                    RunConfig(out=str(work), epochs=generator_epochs(len(trained_on), scale),
                              batch_size=scale.batch_size, seed=seed),
                    family=family)
    gen = load_generator(work / "checkpoints" / "last.safetensors")
    return np.concatenate(list(sample(gen, scale.n_generated, seed=seed)))


def run_cell(family: str, n: int, seed: int, scale: Scale, encoder: str | None, work: Path,
             perturbed: bool = False, null: bool = False, ct: list[np.ndarray] | None = None) -> dict[str, Any]:
    """One (family, member-set size, seed) cell; returns per-detector held-out metrics and the verdict.

    A ``null`` cell trains the generator on other patients than the members (the same count): nothing
    of the members can leak, so every detector must sit at chance and the verdict must not find a leak.
    With ``ct`` (slices of real CT volumes, ``ct_slices``) the images are real slices dealt to the members,
    the non-members and the reference (``ct_roles``); a null cell's generator then learns the reference
    slices, each between two members or between two non-members, as many of each (``CT_DEALING``).
    """
    cfg = _model_cfg(scale)
    labels = np.r_[np.ones(n, int), np.zeros(n, int)]
    reals, reference, trained_on = cell_images(n, seed, scale, null, ct)
    epochs = generator_epochs(len(trained_on), scale)  # as train_and_sample trains it
    t0 = time.perf_counter()
    samples = train_and_sample(family, trained_on, seed, scale, work / "gen")
    # the generator's own memorisation, before any perturbation
    rate, copied, copied_non = copy_stats(samples, reals[:n], reals[n:])
    if perturbed:
        samples = perturb(samples, seed)
    generated = ImageSet.from_pixels(samples, "generated")
    t_gen = time.perf_counter() - t0
    ae = train_autoencoder(generated, cfg, RunConfig(out=str(work / "ae"), epochs=scale.ae_epochs,
                                                     batch_size=scale.batch_size, seed=seed),
                           OptimConfig(lr=scale.lr), DataConfig(no_cache=True, val_fraction=0.1), encoder_path=encoder)
    cfg_scores = ScoreConfig(detectors=(*ScoreConfig().detectors, "domias", "logan", "recon_cal", "pair"), pixel_size=scale.image_size)
    scores = compute_scores(ImageSet.from_pixels(reals, "real"), generated, cfg_scores.detectors,
                            cfg_scores.options(autoencoder=ae, seed=seed, encoder_path=encoder, ref_lr=scale.lr,
                                               cache_dir=str(work / "cache"),  # copy_nn and pair share one embedding
                                               **dict(scale.detector_options)),
                            reference=reference, labels=np.where(heldout_split(labels, seed), labels, -1))
    metrics = heldout_metrics(scores.values, labels, seed)
    # The verdict as `vitprint detect` gives it on these images (all of them labelled; no bootstrap needed).
    _, assessment, _ = assess(scores.values, labels, np.zeros(len(labels), bool), reals, AssessConfig(n_boot=0, seed=seed),
                              not_for_verdict=[*scores.cross_fitted, *scores.supervised])
    v = assessment["verdict"]
    return {"family": family, "members": n, "seed": seed, "null": null, "generator_epochs": epochs,
            "data": "ct" if ct is not None else "phantoms",
            "perturbed": perturbed, "copy_rate": rate, "members_copied": copied,
            "non_members_copied": copied_non, "peers": [d for d in scores.values if d in scores.peers],
            "seconds": time.perf_counter() - t0, "generator_seconds": t_gen,
            "detector_seconds": {name: round(sec, 2) for name, sec in scores.seconds.items()}, "detectors": metrics,
            # every real image's scores (members first, to 7 significant digits), so a later decision rule can
            # be judged on this cell again without training anything: heldout_metrics(scores, labels, seed)
            "scores": {name: [float(f"{x:.7g}") for x in v] for name, v in scores.values.items()},
            "verdict": {k: v[k] for k in ("verdict", "primary", "primary_auc", "p_value", "blind_auc", "cv_auc")}}


def _pretrained_encoder(scale: Scale, out: Path) -> str:
    enc = out / "pretrain" / "encoder.safetensors"
    if (out / "pretrain" / "summary.json").is_file():
        return str(enc)
    from vitprint.data.phantoms import make_phantoms

    shutil.rmtree(out / "pretrain", ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        make_phantoms(tmp, per_class=scale.pretrain_per_class, size=scale.phantom_size, seed=99)
        pretrain(tmp, _model_cfg(scale), RunConfig(out=str(out / "pretrain"), epochs=scale.pretrain_epochs,
                                                   batch_size=scale.batch_size),
                 dataclasses.replace(PRETRAIN_OPTIM, lr=scale.lr), DataConfig(no_cache=True, val_fraction=0.15))
    return str(enc)


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every 5 ms (bytes)."""

    def __enter__(self):
        import psutil

        self._proc = psutil.Process()
        self.base = self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def extra_mb(self) -> float:
        return (self.peak - self.base) / 2**20


def scoring_speed(scale: Scale, encoder: str | None, device: str = "cpu") -> list[dict[str, Any]]:
    """Real images scored per second and peak extra memory against the generated-set size."""
    cfg = _model_cfg(scale)
    from vitprint.models.encoder import ViTEncoder
    from vitprint.training.checkpoint import init_encoder

    enc = ViTEncoder(cfg).eval()
    init_encoder(enc, encoder_path=encoder)
    enc.to(device)
    rng = np.random.default_rng(0)
    queries = ImageSet.from_pixels(rng.integers(0, 256, (scale.speed_queries, scale.image_size, scale.image_size), dtype=np.uint8), "q")
    t = time.perf_counter()
    probe = ImageSet.from_pixels(rng.integers(0, 256, (256, scale.image_size, scale.image_size), dtype=np.uint8), "p")
    encode(enc, probe, progress=False)
    encode_rate = len(probe) / (time.perf_counter() - t)
    z_q = torch.from_numpy(encode(enc, queries, progress=False))
    rows = []
    for n_gen in scale.speed_sizes:
        gen_pixels = rng.integers(0, 256, (n_gen, scale.image_size, scale.image_size), dtype=np.uint8)
        gen_latents = rng.normal(size=(n_gen, cfg.latent_dim)).astype(np.float32)
        conv = pixel_vectors(scale.image_size)
        for name, run in (
            ("pixel_nn", lambda: knn_distances(queries.pixels, gen_pixels, 1, "l2", conv, device, progress=False)),
            ("latent_nn", lambda: knn_distances(z_q, gen_latents, 5, "cosine", None, device, progress=False)),
        ):
            # One search first, untimed: a search over freshly allocated memory took about twice as long as
            # the next, and how much memory came back warm varied from run to run (docs/benchmarks.md). Then
            # the median of three timed searches.
            with PeakRSS() as mem:
                run()
            times = []
            for _ in range(SPEED_REPEATS):
                t = time.perf_counter()
                run()
                times.append(time.perf_counter() - t)
            dt = float(np.median(times))
            rows.append({"detector": name, "generated": n_gen, "queries": scale.speed_queries,
                         "real_per_s": scale.speed_queries / dt, "seconds": dt, "peak_extra_mb": mem.extra_mb,
                         "timed": f"median of {SPEED_REPEATS} after an untimed search",
                         "encode_generated_s": n_gen / encode_rate if name == "latent_nn" else 0.0})
            log.info("%s vs %d generated: %.1f real/s, +%.0f MB", name, n_gen, rows[-1]["real_per_s"], mem.extra_mb)
        del gen_pixels, gen_latents
    return rows


def run_benchmark(scale_name: str, out: str | Path, families=None, sizes=None, seeds=None,
                  speed: bool = True, perturbed: bool = False, null_cells: bool = True,
                  gen_steps: int | None = None, ct: list[str] | None = None) -> dict[str, Any]:
    """Run (or continue) the benchmark; results accumulate in ``out/results.json``. ``gen_steps`` replaces
    the scale's generator training length (a longer one is the memorisation dial turned up); ``ct`` (CT
    volumes) replaces the phantom patients with real slices (``run_cell``)."""
    if scale_name not in SCALES:
        raise VitprintError(f"scale must be one of {', '.join(SCALES)}, got {scale_name!r}")
    if gen_steps is not None and gen_steps < 1:
        raise VitprintError(f"generator steps must be >= 1, got {gen_steps}", "gen_steps")
    scale = SCALES[scale_name]
    scale = dataclasses.replace(scale, families=tuple(families or scale.families), sizes=tuple(sizes or scale.sizes),
                                seeds=seeds or scale.seeds, gen_steps=gen_steps or scale.gen_steps)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    if results.get("task", "membership") != "membership":
        raise VitprintError(f"{path} holds an attribution benchmark; choose another output folder", "out")
    if results.get("scale") not in (None, scale_name):
        raise VitprintError(f"{path} holds a '{results['scale']}' benchmark; choose another output folder", "out")
    if results.get("perturbed", perturbed) != perturbed:
        raise VitprintError(f"{path} holds a benchmark {'with' if results['perturbed'] else 'without'} perturbed "
                            "generated images; choose another output folder", "out")
    if results.get("config", {}).get("gen_steps", scale.gen_steps) != scale.gen_steps:
        raise VitprintError(f"{path} holds a benchmark with {results['config']['gen_steps']} generator steps; choose "
                            "another output folder", "out")
    data = {"ct": [Path(v).name for v in ct], "dealing": CT_DEALING_NAME} if ct else {"phantoms": True}
    # A results file from before real CT cells existed holds phantom cells.
    held = results.get("data", {"phantoms": True} if results.get("cells") else data)
    if ct and held.get("ct") == data["ct"] and held.get("dealing") != CT_DEALING_NAME:
        order = held.get("dealing") or EARLIER_CT_ORDER
        raise VitprintError(f"{path} holds real-CT cells dealt in another order ({order}); choose another output "
                            "folder", "out")
    if held != data:
        raise VitprintError(f"{path} holds a benchmark on other data ({held}); choose another output "
                            "folder", "out")
    slices = ct_slices(ct, scale.image_size) if ct else None
    if slices is not None:
        for n in scale.sizes:
            ct_roles(slices, n)  # every size fits the volumes, checked before any work
    results.update({"scale": scale_name, "perturbed": perturbed, "config": dataclasses.asdict(scale), "data": data,
                    "default_gen_steps": SCALES[scale_name].gen_steps, "machine": machine(),
                    "default_grid": {"families": list(SCALES[scale_name].families), "sizes": list(SCALES[scale_name].sizes)},
                    "started": results.get("started", time.strftime("%Y-%m-%d %H:%M"))})
    results.setdefault("cells", [])
    done = {(c["family"], c["members"], c["seed"], c.get("null", False)) for c in results["cells"]}
    encoder = _pretrained_encoder(scale, out)
    # Every (family, size, seed), and per family a null cell at the smallest size (a generator of other patients).
    wanted = [(f, n, s, False) for f in scale.families for n in scale.sizes for s in range(scale.seeds)]
    wanted += [(f, min(scale.sizes), s, True) for f in scale.families for s in range(scale.seeds)] if null_cells else []
    todo = [c for c in wanted if c not in done]
    for family, n, seed, null in bar(todo, desc="benchmark cells", unit="cell"):
        with tempfile.TemporaryDirectory(dir=out) as work:
            cell = run_cell(family, n, seed, scale, encoder, Path(work), perturbed, null, slices)
        results["cells"].append(cell)
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(results, indent=2, default=float)))
        log.info("%s%s, %d members, seed %d: %s (%.0f s)", family, " (null generator)" if null else "", n, seed,
                 ", ".join(f"{d} AUC {m['roc_auc']:.3f}" for d, m in cell["detectors"].items()), cell["seconds"])
    ran_speed = speed and "speed" not in results
    if ran_speed:
        results["speed"] = scoring_speed(scale, encoder)
    if todo or ran_speed or "finished" not in results:
        results["finished"] = time.strftime("%Y-%m-%d %H:%M")
    results["summary"] = summarise(results["cells"])
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(results, indent=2, default=float)))
    return results


def machine() -> dict[str, str]:
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return {"cpu": platform.processor() or platform.machine(), "threads": str(torch.get_num_threads()),
            "gpu": dev, "torch": torch.__version__}


def summarise(cells: list[dict]) -> dict[str, dict[str, dict[str, dict[str, list[float]]]]]:
    """``family -> members -> detector -> metric -> [mean, low, high, seeds]`` over seeds (``copy_rate`` as a
    detector row of its own, with its value in every metric's place), and per detector ``roc_auc_fw``:
    ``[low, high]``, the family-wise interval of the ROC-AUC (below)."""
    out: dict = {}
    for c in cells:
        rows = dict(c["detectors"])
        family = family_key(c)
        if "copy_rate" in c:
            rows["copy_rate"] = {k: c["copy_rate"] for k in METRICS}
        for det, m in rows.items():
            for k in METRICS:
                out.setdefault(family, {}).setdefault(str(c["members"]), {}).setdefault(det, {}).setdefault(k, []).append(m[k])
    for fam in out.values():
        for by_det in fam.values():
            for det, ms in by_det.items():
                # the copy rate lies in [-1, 1] (more near-copies of non-members than of members: below 0)
                by_det[det] = {k: [*mean_interval(v, (-1.0, 1.0) if det == "copy_rate" else BOUNDS.get(k, (0.0, 1.0))),
                                   len(v)] for k, v in ms.items()}
    # One seed has no t-interval: its ROC-AUC takes the cell's bootstrap interval over the held-out images.
    for c in cells:
        for det, m in c["detectors"].items():
            row = out[family_key(c)][str(c["members"])][det]["roc_auc"]
            if row[3] == 1 and "roc_auc_interval" in m:
                row[1:3] = m["roc_auc_interval"]
    # Family-wise intervals (Bonferroni over a table's rows at one size): "every detector at chance" asks
    # about all rows at once. One seed: its held-out bootstrap at 1 - 0.05 / rows. Several: the mean of the
    # seeds' AUCs with the spread of their held-out bootstraps (each seed's 95% interval read as a normal
    # standard error), i.e. given the trained generators; with nothing leaked every seed's AUC is 0.5 up to
    # which images were held out, so this tests the null. (A t-interval over 2-3 seeds at 99.7% spans
    # [0, 1] and could never fail.)
    from scipy.stats import norm

    per_seed: dict[tuple[str, str, str], list] = {}
    for c in cells:
        for det, m in c["detectors"].items():
            per_seed.setdefault((family_key(c), str(c["members"]), det), []).append(m)
    for (fam, size, det), ms in per_seed.items():
        level = 1 - 0.05 / sum(d != "copy_rate" for d in out[fam][size])
        if len(ms) == 1:
            if "roc_auc_interval_fw" in ms[0]:  # (not in cells run before it was recorded)
                out[fam][size][det]["roc_auc_fw"] = list(ms[0]["roc_auc_interval_fw"])
            continue
        widths = [m.get("roc_auc_interval", (float("nan"),) * 2) for m in ms]
        se = math.sqrt(sum(((hi - lo) / (2 * 1.96)) ** 2 for lo, hi in widths)) / len(ms)
        mean, half = float(np.mean([m["roc_auc"] for m in ms])), float(norm.ppf(1 - (1 - level) / 2)) * se
        out[fam][size][det]["roc_auc_fw"] = [max(mean - half, 0.0), min(mean + half, 1.0)]  # nan if any seed had none
    return out
