"""Which way round the generated images are, against the real ones.

A generator can give its training images back mirrored left to right (trained
with random flips, or fed slices exported under another orientation convention
than the auditor's), upside down or turned a quarter. A copy that is turned so
is not found by a search that never turns it, and the audit would say "no
evidence" with a leak in front of it.

Each generated image votes for the orientation of the real images in which
its most alike real image is most alike (normalised correlation of 32-px
thumbnails, each centred on its body: the gross anatomy, wherever a shift put
it). The real images vote the same way among themselves (each against the
*other* real images): the share a turn gets when nothing is turned, on these
very images. A share counts as found when it is ``min_excess`` above the real
images' own, or above an even share where that is larger (votes that carry
nothing scatter, and copies of one image vote alike), with ``min_votes``
votes at least.

The mirror image so found is reported: a generator trained with random flips
mirrors some of its images, not all; the job then searches mirrored copies too
(``align_nn``'s ``mirror``), which costs time (and a little on turns past 15
degrees; docs/benchmarks.md). Any other turn is taken together with its mirror
image (a set stored upside down by a generator trained with random flips votes
half "upside down", half "turned 180 degrees"): when such a pair has more than
half of all the votes, a set stored under another convention, its turn with
more votes is reported (and the other where it clears the same bar as the
mirror image on its own), and the job turns back each generated image that
voted for either (``image_turns``, ``turn_back_each``) before any detector
sees it, searching mirrored copies too where some voted for the partner; the
other images, copies kept as the real images are among them, stay as they
are. Below ``min_votes`` generated images or 2 real
ones there is no vote. No label is read: members and non-members are treated
alike.
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


_PROBE = torch.arange(12.0).reshape(1, 3, 4)[..., :3]  # 3 x 3, every entry distinct: tells the 8 apart


def _name_of(image: torch.Tensor) -> str:
    """The orientation that turns ``_PROBE`` into ``image`` (the group of 8 is closed)."""
    return next(k for k, turn in ORIENTATIONS.items() if torch.equal(turn(_PROBE), image))


# the turn that undoes each; each followed by a mirror image left to right (what a generator trained with random
# flips gives back of an image stored so)
INVERSE = {name: next(k for k, undo in ORIENTATIONS.items() if torch.equal(undo(turn(_PROBE)), _PROBE))
           for name, turn in ORIENTATIONS.items()}
PARTNER = {name: _name_of(turn(_PROBE).flip(-1)) for name, turn in ORIENTATIONS.items()}


def turn_back(pixels, turn: str) -> np.ndarray:
    """``(N, S, S)`` images found ``turn``ed against the real ones, turned back: a new array, the images' own
    dtype."""
    if turn not in ORIENTATIONS:
        raise ValueError(f"unknown turn {turn!r}")
    return np.ascontiguousarray(ORIENTATIONS[INVERSE[turn]](torch.from_numpy(np.array(pixels))).numpy())


def turn_back_each(pixels, turns) -> np.ndarray:
    """``(N, S, S)`` images, each turned back from its own entry of ``turns`` (a turn's name, or None for an
    image left as it is; ``image_turns``): a new array."""
    turns = np.asarray(turns, object)
    if len(turns) != len(pixels):
        raise ValueError(f"{len(turns)} turns for {len(pixels)} images")
    out = np.array(pixels)
    for name in {t for t in turns if t is not None}:
        idx = np.flatnonzero(turns == name)
        out[idx] = turn_back(out[idx], name)
    return out


@dataclass
class OrientationCheck:
    """Shares of the generated images (``shares``) and of the real images (``baseline``) voting for each
    orientation of the real images (as the module says)."""

    shares: dict[str, float]
    baseline: dict[str, float]
    n_generated: int
    n_real: int
    min_excess: float = 0.15
    min_votes: int = 10
    size: int = 32  # how the vote was taken, for ``image_turns`` to vote alike
    max_real: int = 2000
    seed: int = 0

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

    def _votes(self, turn: str) -> int:
        return round(self.shares[turn] * self.n_generated)

    def stored_as(self) -> str | None:
        """The turn a whole set is stored under, taken with its mirror image (``PARTNER``): the pair, other
        than "as stored" and the mirror image, with more than half of the votes and ``min_excess`` above the
        real images' own share or an even share (2/8), named by its turn with more votes; None where no pair
        has that (or without a vote)."""
        if not self.voted:
            return None
        for turn in ORIENTATIONS:
            if turn in ("as stored", MIRRORED) or PARTNER[turn] < turn:  # each pair once
                continue
            pair = self.shares[turn] + self.shares[PARTNER[turn]]
            floor = max(self.baseline[turn] + self.baseline[PARTNER[turn]], 2 / len(ORIENTATIONS))
            if pair > 0.5 and pair - floor >= self.min_excess:
                return max((turn, PARTNER[turn]), key=lambda k: self.shares[k])
        return None

    def _found(self, turn: str) -> bool:
        return self.excess[turn] >= self.min_excess and self._votes(turn) >= self.min_votes

    def turned(self) -> dict[str, float]:
        """The turns found, with their shares: the mirror image when its excess is ``min_excess`` or more with
        ``min_votes`` votes; the turn a set is stored under (``stored_as``), and its mirror partner where that
        clears the same bar on its own (a generator trained with flips); none without a vote."""
        if not self.voted:
            return {}
        found = {MIRRORED: self.shares[MIRRORED]} if self._found(MIRRORED) else {}
        whole = self.stored_as()
        if whole and self._votes(whole) >= self.min_votes:
            found[whole] = self.shares[whole]
            if self._found(PARTNER[whole]):
                found[PARTNER[whole]] = self.shares[PARTNER[whole]]
        return found

    def set_turns(self) -> list[str]:
        """The turns found other than the mirror image, the set's own turn first (``image_turns``)."""
        return [k for k in self.turned() if k != MIRRORED]

    def to_dict(self) -> dict:
        return {"voted": self.voted,
                "generated": {k: round(v, 3) for k, v in self.shares.items() if v},
                "real_among_themselves": {k: round(v, 3) for k, v in self.baseline.items() if v},
                "sampled": {"generated": self.n_generated, "real": self.n_real}, "turned": self.turned()}


CHUNK = 256  # images made into thumbnails at a time


def _thumbs(pixels, size: int, idx: np.ndarray) -> torch.Tensor:
    """``(n, size, size)`` thumbnails of ``pixels[idx]``, each moved so that its centre of brightness (above its
    darkest grey level: the body, not the air around it) sits at the centre. A copy shifted by a generator
    then lines up with its source whichever way either is turned; unmoved, a body that is nearly symmetric
    matches its own mirror image or upside-down self about as well as a shifted copy of itself. Made
    ``CHUNK`` images at a time, each first shrunk to twice ``size`` (the memory stays small at any size)."""
    parts = []
    for start in range(0, len(idx), CHUNK):
        x = torch.from_numpy(np.asarray(np.asarray(pixels)[idx[start:start + CHUNK]], np.float32))[:, None]
        if x.shape[-1] > 2 * size or x.shape[-2] > 2 * size:
            x = F.interpolate(x, size=(2 * size, 2 * size), mode="area")
        x = x - x.amin((-2, -1), keepdim=True)
        h, w = x.shape[-2:]
        mass = x.sum((-2, -1))[:, 0].clamp_min(1e-6)
        ys, xs = torch.linspace(-1, 1, h), torch.linspace(-1, 1, w)  # the affine grid's coordinates
        theta = torch.zeros(len(x), 2, 3)
        theta[:, 0, 0] = theta[:, 1, 1] = 1
        theta[:, 0, 2] = (x.sum(-2)[:, 0] * xs).sum(-1) / mass  # sample from around the centre of brightness
        theta[:, 1, 2] = (x.sum(-1)[:, 0] * ys).sum(-1) / mass
        grid = F.affine_grid(theta, list(x.shape), align_corners=True)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="area")
        parts.append(x[:, 0])
    return torch.cat(parts) if parts else torch.zeros(0, size, size)


def _unit(x: torch.Tensor) -> torch.Tensor:
    x = x.flatten(1)
    x = x - x.mean(1, keepdim=True)
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-6)


def _winners(queries: torch.Tensor, turned_real: list[torch.Tensor], exclude_self: bool = False) -> np.ndarray:
    """Per query thumbnail, the index (into ``ORIENTATIONS``) of the orientation of the real images in which
    its most alike real image is most alike; ``turned_real``: the real thumbnails in each orientation, unit."""
    q = _unit(queries)
    best = []
    for real in turned_real:
        sim = q @ real.T
        if exclude_self:
            sim.fill_diagonal_(-2.0)  # an image is not its own neighbour (its turns are: a turn of itself)
        best.append(sim.max(1).values)
    return torch.stack(best, 1).argmax(1).numpy()


def _shares(winners: np.ndarray) -> dict[str, float]:
    return {k: float((winners == i).mean()) for i, k in enumerate(ORIENTATIONS)}


def _sample(n: int, most: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(n, most, replace=False)) if n > most else np.arange(n)


def _turned_real(real, size: int, max_real: int, seed: int) -> list[torch.Tensor]:
    r = _thumbs(real, size, _sample(len(real), max_real, np.random.default_rng([seed, 1])))
    return [_unit(turn(r)) for turn in ORIENTATIONS.values()]


def check_orientation(generated, real, size: int = 32, max_generated: int = 1000, max_real: int = 2000,
                      seed: int = 0, min_excess: float = 0.15, min_votes: int = 10) -> OrientationCheck:
    """Vote, as the module says, on square ``(N, S, S)`` arrays: at most ``max_generated`` generated images
    against at most ``max_real`` real ones (seeded samples; a few seconds on a CPU at these sizes)."""
    n_real = min(len(real), max_real)
    g_idx = _sample(len(generated), max_generated, np.random.default_rng(seed))
    check = OrientationCheck({k: 0.0 for k in ORIENTATIONS}, {k: 0.0 for k in ORIENTATIONS}, len(g_idx), n_real,
                             min_excess, min_votes, size, max_real, seed)
    if not check.voted:  # too few images
        return check
    turned_real = _turned_real(real, size, max_real, seed)
    check.shares = _shares(_winners(_thumbs(generated, size, g_idx), turned_real))
    check.baseline = _shares(_winners(turned_real[0], turned_real, exclude_self=True))
    return check


def image_turns(generated, real, check: OrientationCheck) -> np.ndarray:
    """Per generated image (all of them, not a sample), the turn to undo, or None (an object array); all None
    where the check found no set stored another way. An image voting for the set's turn gets it; one voting
    for its mirror partner gets the partner where that was found on its own (``check.set_turns()``), else
    the set's turn too (on a body nearly symmetric left to right the two are easily confused, and a copy
    turned back by the wrong one of them comes back mirrored: the caller searches mirrored copies then, as
    ``plan_orientation`` does); an image voting for anything else is left as it is."""
    out = np.full(len(generated), None, object)
    wanted = check.set_turns()
    if not wanted:
        return out
    whole = wanted[0]
    undo = {turn: turn for turn in wanted}
    undo.setdefault(PARTNER[whole], whole)
    turned_real = _turned_real(real, check.size, check.max_real, check.seed)
    names = list(ORIENTATIONS)
    for start in range(0, len(generated), 1024):
        idx = np.arange(start, min(start + 1024, len(generated)))
        for i, w in zip(idx, _winners(_thumbs(generated, check.size, idx), turned_real)):
            out[i] = undo.get(names[w])
    return out
