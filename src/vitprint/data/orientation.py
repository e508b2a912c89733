"""Which way round the generated images are, against the real ones.

A generator can give its training images back mirrored left to right (trained
with random flips, or fed slices exported under another orientation convention
than the auditor's), upside down or turned a quarter. A copy that is turned so
is not found by a search that never turns it, and the audit would say "no
evidence" with a leak in front of it.

Each generated image votes for the orientation of the real images in which
its most alike real image is most alike (normalised correlation of 32-px
thumbnails, each centred on its body: the gross anatomy, wherever a shift put
it). The real images vote the
same way among themselves (each against the *other* real images): the share a
turn gets when nothing is turned, on these very images. The mirror image is
reported when the share of generated images voting for it exceeds the real
images' own, or an even share of the 8 where that is larger, by ``min_excess``
or more, with at least ``min_votes`` votes: a generator trained with random
flips mirrors some of its images, not all; the job then searches mirrored
copies too (``align_nn``'s ``mirror``), which costs time (and a little on turns
past 15 degrees; docs/benchmarks.md). Any other turn is reported only when,
beyond that, more than half of the generated images vote for it: a whole set
stored under another convention, which the job then turns back
(``turn_back``) before any detector sees it. Below
``min_votes`` generated images or 2 real ones there is no vote. No label is
read: members and non-members are treated alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# name -> the turn, on (N, S, S) tensors
ORIENTATIONS = {
    "as stored": lambda x: x,
    "mirrored left to right": lambda x: x.flip(-1),
    "upside down": lambda x: x.flip(-2),
    "turned 180 degrees": lambda x: x.flip(-1).flip(-2),
    "transposed": lambda x: x.transpose(-1, -2),
    "turned 90 degrees": lambda x: x.transpose(-1, -2).flip(-1),
    "turned 270 degrees": lambda x: x.transpose(-1, -2).flip(-2),
    "transposed the other way": lambda x: x.transpose(-1, -2).flip(-1).flip(-2),
}
MIRRORED = "mirrored left to right"


def _inverse(name: str) -> str:
    """The turn that undoes ``name`` (found on a test array: the group of 8 is closed)."""
    x = torch.arange(12.0).reshape(1, 3, 4)[..., :3]  # 3 x 3, every entry distinct
    turned = ORIENTATIONS[name](x)
    return next(k for k, undo in ORIENTATIONS.items() if torch.equal(undo(turned), x))


INVERSE = {name: _inverse(name) for name in ORIENTATIONS}


def turn_back(pixels, turn: str) -> np.ndarray:
    """``(N, S, S)`` images found ``turn``ed against the real ones (``OrientationCheck.set_turn``), turned
    back: a new array, the images' own dtype."""
    if turn not in ORIENTATIONS:
        raise ValueError(f"unknown turn {turn!r}")
    return np.ascontiguousarray(ORIENTATIONS[INVERSE[turn]](torch.from_numpy(np.array(pixels))).numpy())


@dataclass
class OrientationCheck:
    """Shares of the generated images (``shares``) and of the real images (``baseline``) voting for each
    orientation of the real images; ``excess``: a turn's share above its baseline, or above an even share
    of the 8 where that is larger."""

    shares: dict[str, float]
    baseline: dict[str, float]
    n_generated: int
    n_real: int
    min_excess: float = 0.15
    min_votes: int = 10

    @property
    def excess(self) -> dict[str, float]:
        """Each turn's share of the generated images' votes above its share of the real images' own, or above
        1/8 where that is larger: votes that carry nothing (images too alike, or copies not recognisable at
        this size) spread over the 8 turns, and copies of one image vote alike, so a turn can get far more
        than its baseline by chance where the baseline is 0 (neighbouring slices, each other's best match)."""
        even = 1 / len(ORIENTATIONS)
        return {k: self.shares[k] - max(self.baseline[k], even) for k in ORIENTATIONS}

    @property
    def voted(self) -> bool:
        """Enough images to vote: ``min_votes`` generated ones and 2 real ones."""
        return self.n_generated >= self.min_votes and self.n_real >= 2

    def turned(self) -> dict[str, float]:
        """The turns (not "as stored") the generated images prefer beyond the baseline (as the module says),
        with their shares; none without a vote."""
        if not self.voted:
            return {}
        return {k: self.shares[k] for k in ORIENTATIONS
                if k != "as stored" and self.excess[k] >= self.min_excess
                and round(self.shares[k] * self.n_generated) >= self.min_votes
                and (k == MIRRORED or self.shares[k] > 0.5)}

    def set_turn(self) -> str | None:
        """The turn (not the mirror image) under which the whole set is stored, to be turned back: the one
        reported (more than half of the generated images vote for it), or None."""
        return next((k for k in self.turned() if k != MIRRORED), None)

    def to_dict(self) -> dict:
        return {"voted": self.voted,
                "generated": {k: round(v, 3) for k, v in self.shares.items() if v},
                "real_among_themselves": {k: round(v, 3) for k, v in self.baseline.items() if v},
                "sampled": {"generated": self.n_generated, "real": self.n_real}, "turned": self.turned()}


def _thumbs(pixels, size: int, idx: np.ndarray) -> torch.Tensor:
    """``(n, size, size)`` thumbnails, each moved so that its centre of brightness (above its darkest grey
    level: the body, not the air around it) sits at the centre. A copy shifted by a generator then lines up
    with its source whichever way either is turned; unmoved, a body that is nearly symmetric matches its
    own mirror image or upside-down self about as well as a shifted copy of itself."""
    x = torch.from_numpy(np.asarray(pixels)[idx].astype(np.float32))[:, None]
    x = x - x.amin((-2, -1), keepdim=True)
    h, w = x.shape[-2:]
    mass = x.sum((-2, -1)).clamp_min(1e-6)  # (n, 1)
    ys, xs = torch.linspace(-1, 1, h), torch.linspace(-1, 1, w)  # the affine grid's coordinates
    cy = (x.sum(-1)[:, 0] * ys).sum(-1) / mass[:, 0]
    cx = (x.sum(-2)[:, 0] * xs).sum(-1) / mass[:, 0]
    theta = torch.zeros(len(x), 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    theta[:, 0, 2], theta[:, 1, 2] = cx, cy  # sample from around the centre of brightness
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="area")
    return x[:, 0]


def _unit(x: torch.Tensor) -> torch.Tensor:
    x = x.flatten(1)
    x = x - x.mean(1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-6)


def _votes(queries: torch.Tensor, real: torch.Tensor, exclude_self: bool) -> dict[str, float]:
    """Share of ``queries`` whose most alike real image is most alike in each orientation of ``real``."""
    q = _unit(queries)
    best = []
    for turn in ORIENTATIONS.values():
        sim = q @ _unit(turn(real)).T
        if exclude_self:
            sim.fill_diagonal_(-2.0)  # an image is not its own neighbour (its turns are: a turn of itself)
        best.append(sim.max(1).values)
    winner = torch.stack(best, 1).argmax(1).numpy()
    return {k: float((winner == i).mean()) for i, k in enumerate(ORIENTATIONS)}


def check_orientation(generated, real, size: int = 32, max_generated: int = 1000, max_real: int = 2000,
                      seed: int = 0, min_excess: float = 0.15, min_votes: int = 10) -> OrientationCheck:
    """Vote, as the module says, on square ``(N, S, S)`` arrays: at most ``max_generated`` generated images
    against at most ``max_real`` real ones (seeded samples; a few seconds on a CPU at these sizes)."""
    rng = np.random.default_rng(seed)

    def sample(n: int, most: int) -> np.ndarray:
        return np.sort(rng.choice(n, most, replace=False)) if n > most else np.arange(n)

    g_idx, r_idx = sample(len(generated), max_generated), sample(len(real), max_real)
    check = OrientationCheck({k: 0.0 for k in ORIENTATIONS}, {k: 0.0 for k in ORIENTATIONS}, len(g_idx), len(r_idx),
                             min_excess, min_votes)
    if not check.voted:  # too few images
        return check
    g, r = _thumbs(generated, size, g_idx), _thumbs(real, size, r_idx)
    check.shares, check.baseline = _votes(g, r, exclude_self=False), _votes(r, r, exclude_self=True)
    return check
