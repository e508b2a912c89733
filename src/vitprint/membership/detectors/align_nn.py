"""``align_nn``: registration-aware pixel similarity, judged against the other real images.

For each real image, the generated images that align best with it at low
resolution (``coarse_size``, every generated image, by the same correlation
over a grid of rotations and scales) are the candidates; each candidate is
then compared at full resolution by the maximum normalised cross-correlation
over every shift up to ``max_shift`` of the image's side (10% by default; with 6%,
before 2026-12-07, copies moved by 6-9% ranked lower: 0.83 on real CT against 1.00),
around the best coarse rotation
(within ``max_rotation`` degrees) and scale (within ``max_scale``, what a
crop-and-resize does), computed with FFTs. Both images are band-passed first
(a difference of Gaussians, 2-6 px at 256 px by default; with several
``bands`` their correlations are averaged): the broad anatomy every slice
shares weighs little, the detail a copy keeps (vessels, texture) weighs much,
and pixel noise and a little blur are filtered out. Normalised correlation
ignores brightness and contrast changes, so re-windowed copies still match.
At the best pose and shift, the pair is then refined tile by tile (``local_tile``
px at 256 px, 24 by default; 0 turns it off): each tile of the generated image
finds its own best shift within ``local_shift`` pixels (4 at 256 px), each shift
(dy, dx) costing ``local_penalty * (dy^2 + dx^2) / local_shift^2`` of correlation (0.05: a tile of an
unrelated image, free to move, finds chance matches; a copy's tiles move little), and the
pair's correlation is the tiles' best normalised correlations averaged, weighted by
each tile's energy. An elastic deformation, a residual zoom or turn moves each
part of a copy by its own few pixels, which no single shift undoes; unaligned,
a copy correlated with its source barely more than with the slice next to it.
With ``mirror``, every pose is also searched with the real image mirrored left to
right (a generator trained with random flips can give a member back mirrored;
off by default: left and right differ in CT, and it doubles the pose search;
a job turns it on when its generated images vote for the mirror image,
``vitprint.data.orientation``).

Score (``relative=True``, the default): is this real image the one a
generated image was copied from? A generator's copy is degraded (resampled,
blurred, noisy), so its correlation with its source varies from copy to copy
and can fall below the correlation a *neighbouring* slice has with a sharper
copy of its neighbour. What does not vary is the order: the source correlates
with its copy better than any other real image does. So each of a real
image's best few candidates (``TOP``) is also compared at full resolution with
the real images that align best with it (the other images scored in the same
call and the job's other real images, e.g. the other phase's; identical
pixels are never rivals), and each candidate's margin is the image's
correlation with it minus its best rival's. The score adds up the positive
margins (a generator that memorised an image often leaves several copies of
it, each won by its source); where no candidate wins, it is the largest
(negative) margin; a generated image repeated pixel for pixel counts once.
Where no other image was compared (a lone image), the rival is the median of
the image's own candidates, a larger margin on another scale, of which only
the largest counts: score real images together.
The reference set is not used: a reference drawn nearer to one group (the
non-members' neighbouring slices, say) would lower that group's margins and
separate the groups with nothing leaked. ``relative=False`` gives the plain
best correlation (the tile-wise one with ``local_tile``; in [-1, 1]). The pose is refined by half a step beyond the
searched grid. The grid is fine (``rotation_step`` 1.25 degrees, ``scale_step`` 2.5%):
where a member's neighbouring slices are nearly the member, a copy's margin over
them is a few thousandths of correlation, and a coarse pose (2.5 degrees, 5%, the
earlier default) lets the pose error decide it (a thin-slice stand-in of real CT
with warped copies: 0.88 then, 0.97-0.98 now, at about twice the search's time at
256 px and several times at 64 px, where the benchmark's cpu scale keeps the earlier grid).

Above ``prefilter`` generated images (512 by default), each real image's pose search
is limited to its ``prefilter`` likeliest generated images by a cheap, shift-invariant
signature (the pooled magnitude spectrum of the band-passed image at each searched
scale, compared by cosine through the k-NN search), so the cost grows with the generated set only through that
search; a generated image's rivals are then sought among the real images that
shortlisted it.

The nearest generated image is the candidate with the largest margin. Pixel
correlation with the training set is how copies made by medical generators
have been found (Akbar et al.); this makes it shift-, scale- and
intensity-robust and fast.
"""

from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F

from vitprint.data.dataset import to_model_range
from vitprint.data.filters import gaussian_response
from vitprint.errors import VitprintError
from vitprint.membership.base import Detector, as_pixels, pixel_hashes
from vitprint.membership.knn import knn_distances
from vitprint.membership.registry import register_detector
from vitprint.progress import bar


RIVALS = 4  # real images each judged generated image is also compared with
TOP = 6  # candidates per real image judged against their rivals
# The pose grid and tiles that were the defaults before 2026-12-07. At 64 px it scored the phantom VAE cells
# as well as the finer default for a third to a quarter of the search (docs/benchmarks.md, "align_nn's pose
# grid"), so the benchmark's cpu scale and the demo, both at 64 px, give it explicitly.
COARSE_GRID = {"rotation_step": 2.5, "scale_step": 0.05, "local_tile": 32}


def _grid(limit: float, step: float) -> np.ndarray:
    """``0, ±step, ±2 step, ...`` up to ``limit`` (just ``0`` when either is 0)."""
    n = int(limit // step + 1e-9) if limit > 0 and step > 0 else 0
    return np.arange(-n, n + 1) * step


def _transform(u8, angles, scales, mirrored=False) -> np.ndarray:
    """``(m, S, S)`` images turned by ``angles`` degrees and magnified by ``scales`` about their centre
    (one value for all, or one per image), bilinear; float32 in the images' grey levels. Where
    ``mirrored`` (likewise), the image is mirrored left to right first."""
    x = torch.from_numpy(np.asarray(u8, np.float32))[:, None]
    mirrored = np.broadcast_to(np.asarray(mirrored, bool), (len(x),))
    if mirrored.any():  # not in place: ``x`` may share the caller's memory
        x = torch.where(torch.from_numpy(mirrored.copy())[:, None, None, None], x.flip(-1), x)
    angles = np.broadcast_to(np.asarray(angles, float), (len(x),)).copy()
    scales = np.broadcast_to(np.asarray(scales, float), (len(x),)).copy()
    if not angles.any() and (scales == 1).all():
        return x[:, 0].numpy()
    a = torch.from_numpy(np.deg2rad(angles)).float()
    s = torch.from_numpy(scales).float()
    cos, sin = torch.cos(a) / s, torch.sin(a) / s
    theta = torch.stack([torch.stack([cos, -sin, torch.zeros_like(a)], 1),
                         torch.stack([sin, cos, torch.zeros_like(a)], 1)], 1)
    return F.grid_sample(x, _affine_grid(theta, x.shape[-1]), mode="bilinear", padding_mode="border",
                         align_corners=False)[:, 0].numpy()


def _affine_grid(theta: torch.Tensor, size: int) -> torch.Tensor:
    """``F.affine_grid(theta, (B, 1, size, size), align_corners=False)`` by broadcasting (the same sampling
    points to rounding; faster on a CPU than its batched product with a 3-column grid)."""
    at = (torch.arange(size, dtype=theta.dtype, device=theta.device) * 2 + 1) / size - 1  # pixel centres
    x, y, t = at[None, None, :], at[None, :, None], theta[..., None, None]
    return torch.stack([t[:, 0, 0] * x + t[:, 0, 1] * y + t[:, 0, 2], t[:, 1, 0] * x + t[:, 1, 1] * y + t[:, 1, 2]], -1)


def _posed(x: np.ndarray, rows, angles, scales, mirrored) -> tuple[np.ndarray, torch.Tensor]:
    """The images ``x[rows]``, each in its pose, made once per distinct (image, pose): ``(u, S, S)`` posed
    images and, per entry, the index of its own among them (many candidates share a real image's pose)."""
    keys = np.c_[rows, angles, scales, mirrored]
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    posed = _transform(x[uniq[:, 0].astype(np.int64)], uniq[:, 1], uniq[:, 2], uniq[:, 3] > 0.5)
    return posed, torch.as_tensor(np.asarray(inverse).reshape(-1))


def rivals(rows, cols, values, same) -> np.ndarray:
    """For each pair (real ``rows[i]``, generated ``cols[i]``, correlation ``values[i]``), the best
    correlation another real image has with the same generated image (``-inf`` where none was measured).

    ``same[r]``: an id equal for real images with identical pixels, which are never each other's rival.
    """
    owner = same[rows]
    top: dict[int, list[tuple[int, float]]] = {}  # generated index -> its two best distinct owners
    for i in np.argsort(-values, kind="stable"):
        best = top.setdefault(int(cols[i]), [])
        if len(best) < 2 and all(o != owner[i] for o, _ in best):
            best.append((int(owner[i]), float(values[i])))
    return np.asarray([next((v for o, v in top[int(g)] if o != o_i), -np.inf) for g, o_i in zip(cols, owner)])


def _signature(spectra: torch.Tensor) -> np.ndarray:
    """``(m, D)`` shift-invariant signatures of band-passed images from their spectra: the magnitude,
    pooled over 2 x 2 frequency bins (a small turn or zoom moves little of it), centred per image."""
    mag = torch.fft.fftshift(spectra.abs(), dim=-2)[:, None]  # low frequencies together along both axes
    pooled = F.avg_pool2d(mag, 2, ceil_mode=True).flatten(1)
    return (pooled - pooled.mean(1, keepdim=True)).cpu().numpy()


def _reverse(m: int, gen: np.ndarray, real: np.ndarray, value: np.ndarray, pose: np.ndarray):
    """The rivals' table from measured (generated, real, value, pose) pairs: for each of the ``m``
    generated images, the ``RIVALS`` real images that aligned best with it (value -2 where fewer)."""
    order = np.lexsort((-value, gen))
    gen, real, value, pose = gen[order], real[order], value[order], pose[order]
    first = np.r_[0, np.flatnonzero(np.diff(gen)) + 1]
    rank = np.arange(len(gen)) - np.repeat(first, np.diff(np.r_[first, len(gen)]))
    keep = rank < RIVALS
    rev_v, rev_i = torch.full((m, RIVALS), -2.0), torch.full((m, RIVALS), -1, dtype=torch.long)
    rev_p = torch.zeros((m, RIVALS), dtype=torch.long)
    at = (torch.as_tensor(gen[keep]), torch.as_tensor(rank[keep]))
    rev_v[at], rev_i[at], rev_p[at] = (torch.as_tensor(value[keep]).float(), torch.as_tensor(real[keep]),
                                       torch.as_tensor(pose[keep]))
    return rev_v, rev_i, rev_p


def _local(a: torch.Tensor, b: torch.Tensor, tile: int, reach: int, penalty: float = 0.0) -> torch.Tensor:
    """``(B,)`` local correlations of aligned image pairs ``a``, ``b`` ``(B, S, S)``: ``b`` is cut into
    ``tile`` x ``tile`` tiles, each matched with ``a`` over every shift up to ``reach`` pixels by normalised
    correlation; the tiles' best correlations are averaged, weighted by the tile's energy in ``b`` (an
    elastic deformation or a residual zoom moves each part of a copy by its own few pixels). A tile's
    correlation at shift ``(dy, dx)`` is lowered by ``penalty * (dy^2 + dx^2) / reach^2`` before its best is taken: a
    tile of an unrelated image, free to move, finds some chance match; a copy's tiles barely move."""
    n_pairs, size = a.shape[0], a.shape[-1]
    n = size // tile
    w = tile + 2 * reach
    tiles = b[:, :n * tile, :n * tile].reshape(n_pairs, n, tile, n, tile).transpose(2, 3).reshape(n_pairs, n * n, tile, tile)
    padded = F.pad(a[:, None], (reach,) * 4, mode="circular")[:, 0]
    windows = padded.unfold(1, w, tile).unfold(2, w, tile)[:, :n, :n].reshape(n_pairs, n * n, w, w)
    f_tiles = torch.fft.rfft2(tiles, s=(w, w)).conj()  # zero-padded to the window: no wrap-around
    valid = (slice(None), slice(None), slice(0, 2 * reach + 1), slice(0, 2 * reach + 1))
    corr = torch.fft.irfft2(torch.fft.rfft2(windows) * f_tiles, s=(w, w))[valid]
    # The energy of ``a`` under each shifted tile, summed directly (an FFT's rounding can leave a tiny
    # energy at 0 and the ratio unbounded).
    energy = F.avg_pool2d((windows ** 2).reshape(-1, 1, w, w), tile, stride=1).reshape(corr.shape) * tile ** 2
    norm = tiles.flatten(2).norm(dim=-1)
    ncc = (corr / (energy.sqrt() * norm[..., None, None]).clamp_min(1e-6)).clamp(-1, 1)
    if penalty:
        t = torch.arange(-reach, reach + 1, dtype=ncc.dtype, device=ncc.device) ** 2
        ncc = ncc - penalty * (t[:, None] + t[None]) / reach ** 2
    ncc = ncc.flatten(2).amax(-1)
    weight = norm ** 2
    return (ncc * weight).sum(1) / weight.sum(1).clamp_min(1e-12)


@register_detector
class AlignNN(Detector):
    name = "align_nn"
    image_size = 256
    uses_others = True  # the job's other real images are rivals too

    def __init__(self, align_size: int = 256, max_shift: float = 0.1, max_rotation: float = 10.0,
                 rotation_step: float = 1.25, max_scale: float = 0.1, scale_step: float = 0.025,
                 candidates: int = 16, bands: tuple[float, ...] = (2.0,), sigma_high: float = 6.0,
                 coarse_size: int = 64, relative: bool = True, prefilter: int = 512,
                 local_tile: int = 24, local_shift: int = 4, local_penalty: float = 0.05, mirror: bool = False,
                 device: str = "cpu"):
        if align_size < 16:
            raise VitprintError(f"align_size must be >= 16, got {align_size}")
        if not 0 <= max_shift < 0.5:
            raise VitprintError(f"max_shift must be a fraction of the image in [0, 0.5), got {max_shift}")
        if candidates < 1:
            raise VitprintError(f"candidates must be >= 1, got {candidates}")
        if prefilter and prefilter < candidates:
            raise VitprintError(f"prefilter must be 0 (off) or >= candidates ({candidates}), got {prefilter}")
        bands = tuple(float(b) for b in (bands if isinstance(bands, (list, tuple)) else [bands]))
        if not bands or not all(0 <= b < sigma_high for b in bands):
            raise VitprintError(f"need 0 <= every band's low sigma < sigma_high, got {bands}, {sigma_high}")
        if max_rotation < 0 or (max_rotation > 0 and rotation_step <= 0):
            raise VitprintError(f"need max_rotation >= 0 and rotation_step > 0, got {max_rotation}, {rotation_step}")
        if not 0 <= max_scale < 0.5 or (max_scale > 0 and scale_step <= 0):
            raise VitprintError(f"need max_scale in [0, 0.5) and scale_step > 0, got {max_scale}, {scale_step}")
        self.image_size = align_size
        for flag, value in (("relative", relative), ("mirror", mirror)):
            if not isinstance(value, (bool, np.bool_)) and value not in (0, 1):
                raise VitprintError(f"{flag} must be true or false, got {value!r}")
        self.max_shift, self.candidates, self.relative = max_shift, candidates, bool(relative)
        self.rotation_step, self.scale_step = rotation_step, scale_step
        self.angles = _grid(max_rotation, rotation_step)
        self.scales = 1.0 + _grid(max_scale, scale_step)
        self.mirror = bool(mirror)
        # A pose: (angle, scale, 1.0 where the real image is mirrored first).
        self.poses_ = [(float(a), float(s), float(m)) for m in ((0, 1) if self.mirror else (0,))
                       for a in self.angles for s in self.scales]
        self.bands, self.sigma_high, self.coarse_size = bands, sigma_high, coarse_size
        self.prefilter = int(prefilter)
        if local_tile < 0 or (local_tile and not 0 < local_shift < local_tile):
            raise VitprintError(f"need local_tile >= 0 (0: off) and 0 < local_shift < local_tile, got {local_tile}, "
                                f"{local_shift}")
        if not 0 <= local_penalty < 1:
            raise VitprintError(f"local_penalty must be in [0, 1), got {local_penalty}")
        self.local_tile, self.local_shift, self.local_penalty = int(local_tile), int(local_shift), float(local_penalty)
        if self.local_tile and self._tile()[0] > align_size:
            raise VitprintError(f"local_tile {local_tile} (at 256 px) is larger than the {align_size}-px image")
        self.device = torch.device(device)
        self._responses: dict = {}  # band-pass responses by (size, low sigma)
        self._dft_cache: dict = {}  # the searched shifts' inverse-DFT rows by (size, dtype)

    def _tile(self) -> tuple[int, int]:
        """The local step's tile side and reach in pixels at ``align_size`` (given at 256 px)."""
        scale = self.image_size / 256
        return max(4, round(self.local_tile * scale)), max(1, round(self.local_shift * scale))

    def fit(self, generated, reference=None) -> "AlignNN":
        self.generated_ = as_pixels(generated)
        if self.generated_.shape[-1] != self.image_size:
            raise VitprintError(f"align_nn works on {self.image_size} px images, got {self.generated_.shape[-1]} px")
        _, self.distinct_ = np.unique(pixel_hashes(self.generated_), return_inverse=True)  # duplicates count once
        self.coarse_size_ = min(self.coarse_size, self.image_size)
        self.coarse_ = self._spectra(self.generated_, self.coarse_size_, batch=512)
        self.signatures_ = _signature(self.coarse_) if 0 < self.prefilter < len(self.generated_) else None
        return self

    def _response(self, size: int, sigma_low: float) -> torch.Tensor:
        """The band-pass's frequency response at ``size`` (computed once per size and band)."""
        if (size, sigma_low) not in self._responses:
            scale = size / 256  # the filter widths are given for 256-px images
            self._responses[size, sigma_low] = (gaussian_response(size, sigma_low * scale, self.device)
                                                - gaussian_response(size, self.sigma_high * scale, self.device))
        return self._responses[size, sigma_low]

    def _spectra(self, images, size: int, band: float | None = None, batch: int = 256) -> torch.Tensor:
        """``(m, S, S)`` images -> spectra ``(m, size, size//2+1)`` of the band-passed, unit-norm images.

        ``band`` is the low sigma of the band (default: the middle one of ``bands``)."""
        response = self._response(size, float(np.median(self.bands)) if band is None else band)
        out = []
        for start in range(0, len(images), batch):
            x = to_model_range(np.asarray(images[start:start + batch])).to(self.device)
            if x.shape[-1] != size:
                x = F.interpolate(x[:, None], size=(size, size), mode="area")[:, 0]
            band = torch.fft.irfft2(torch.fft.rfft2(x) * response, s=(size, size))
            band = band / band.flatten(1).norm(dim=1).clamp_min(1e-6)[:, None, None]
            out.append(torch.fft.rfft2(band))
        return torch.cat(out) if out else torch.zeros((0, size, size // 2 + 1), dtype=torch.complex64)

    def _shifts(self, size: int) -> torch.Tensor:
        """The searched shifts ``0 ... m, -m ... -1`` (as indices modulo ``size``), ``m`` = ``max_shift``."""
        m = int(round(self.max_shift * size))
        return torch.as_tensor(np.r_[0:m + 1, size - m:size] if m else [0], device=self.device)

    def _shift_map(self, a: torch.Tensor, b: torch.Tensor, size: int) -> torch.Tensor:
        """Normalised correlations ``(..., L, L)`` at every searched shift ``t`` (``sum_x a(x + t) b(x)``) of
        spectra broadcast ``a * conj(b)``.

        Only the ``L`` x ``L`` searched shifts of the inverse transform are needed, not all ``size`` x
        ``size``: they are computed as two matrix products with the inverse DFT's rows for those shifts
        (``irfft2`` followed by a selection, to rounding; faster on a CPU than the whole inverse FFT)."""
        product = a * b.conj()
        rows, cols = self._partial_dft(size, product.dtype)
        lead, k, n = product.shape[:-2], product.shape[-1], len(cols[0])
        along_x = (product.reshape(-1, k) @ cols).reshape(*lead, size, n)  # summed over the x frequencies
        corr = (along_x.transpose(-2, -1).reshape(-1, size) @ rows).real  # then over the y frequencies
        return corr.reshape(*lead, n, n).transpose(-2, -1)

    def _partial_dft(self, size: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The inverse real 2-D DFT of ``size`` x ``size`` images, kept only at the searched shifts: ``(size, L)``
        for the y frequencies and ``(size // 2 + 1, L)`` for the x half-spectrum (each of its frequencies but
        0 and Nyquist stands for a conjugate pair: weight 2; the real part is taken at the end), cached."""
        key, cache = (size, dtype), self._dft_cache
        if key not in cache:
            shifts = self._shifts(size).to(torch.float64)
            angle = 2 * np.pi / size
            ky = torch.arange(size, dtype=torch.float64, device=shifts.device)
            kx = torch.arange(size // 2 + 1, dtype=torch.float64, device=shifts.device)
            weight = torch.full_like(kx, 2.0)
            weight[0] = 1.0
            if size % 2 == 0:
                weight[-1] = 1.0
            rows = torch.polar(torch.ones(size, len(shifts), dtype=torch.float64, device=shifts.device),
                               angle * ky[:, None] * shifts[None])
            cols = torch.polar(weight[:, None].expand(-1, len(shifts)) / size ** 2, angle * kx[:, None] * shifts[None])
            cache[key] = rows.to(dtype), cols.to(dtype)
        return cache[key]

    def _best_shift(self, a: torch.Tensor, b: torch.Tensor, size: int) -> torch.Tensor:
        """``(n, m)``: the max normalised correlation over shifts within ``max_shift`` of every spectrum of ``a``
        ``(n, size, size//2+1)`` with every one of ``b`` ``(m, ...)``.

        As ``_shift_map`` of every pair, without forming the pairs' products: the x half-spectrum's sum is one
        batched matrix product per y frequency of ``a`` with ``b`` (conjugated, times the inverse DFT's
        columns for the searched shifts), then the y frequencies' sum is another."""
        rows, cols = self._partial_dft(size, a.dtype)
        (n, _, k), m, shifts = a.shape, len(b), cols.shape[1]
        out = torch.empty((n, m), dtype=rows.real.dtype, device=a.device)
        step = max(1, 2 ** 22 // (size * max(n, k) * shifts))  # generated images per product: bounded memory
        along_y = a.permute(1, 0, 2)  # (size, n, k)
        for start in range(0, m, step):
            g = b[start:start + step]
            right = (g.conj()[..., None] * cols).permute(1, 2, 0, 3).reshape(size, k, -1)  # (size, k, s * shifts)
            summed_x = torch.bmm(along_y, right).reshape(size, -1).T  # (n * s * shifts_x, size)
            corr = (summed_x @ rows).real.reshape(n, len(g), -1)  # every shift, in any order
            out[:, start:start + len(g)] = corr.amax(-1)
        return out

    def _coarse(self, real_u8, offset: int, reverse, allowed=None) -> tuple[np.ndarray, np.ndarray]:
        """``(b, k)`` indices of the generated images that align best at low resolution with these real
        images, with the pose (``(b, k, 3)``: rotation, scale, mirrored) at which each did. ``reverse`` (value, real index, pose index
        ``(n_generated, r)`` tensors, or None) keeps, for every generated image, the real images it aligns
        best with so far; these images are ``offset ...`` of the whole set. ``allowed`` (``(b, M)``
        generated indices, the prefilter's) limits each real image's search to those (``reverse`` then
        collects the pairs instead: ``_prefiltered``)."""
        size = self.coarse_size_
        r = torch.stack([self._spectra(_transform(real_u8, a, s, m), size) for a, s, m in self.poses_], 1)  # (b, P, ...)
        if allowed is not None:
            return self._prefiltered(r, offset, reverse, allowed)
        k = min(self.candidates, len(self.coarse_))
        best_v = torch.full((len(r), k), -2.0)
        best_i = torch.zeros((len(r), k), dtype=torch.long)
        best_p = torch.zeros((len(r), k), dtype=torch.long)
        step = max(1, 2 ** 24 // (len(r) * len(self.poses_)))
        for start in range(0, len(self.coarse_), step):
            g = self.coarse_[start:start + step]  # (m, ...)
            v, p = self._best_shift(r.flatten(0, 1), g, size).reshape(*r.shape[:2], -1).cpu().max(1)  # over poses: (b, m)
            m = v.shape[1]
            cand_v = torch.cat([best_v, v], 1)
            cand_i = torch.cat([best_i, torch.arange(start, start + m).expand(len(r), -1)], 1)
            cand_p = torch.cat([best_p, p], 1)
            best_v, pos = cand_v.topk(k, dim=1)
            best_i, best_p = cand_i.gather(1, pos), cand_p.gather(1, pos)
            if reverse is None:
                continue
            # The other way round: for each generated image, the real images that align best with it.
            rev_v, rev_i, rev_p = reverse
            sl = slice(start, start + m)
            all_v = torch.cat([rev_v[sl], v.T], 1)
            all_i = torch.cat([rev_i[sl], torch.arange(offset, offset + len(r)).expand(m, -1)], 1)
            all_p = torch.cat([rev_p[sl], p.T], 1)
            top, pos = all_v.topk(rev_v.shape[1], dim=1)
            rev_v[sl], rev_i[sl], rev_p[sl] = top, all_i.gather(1, pos), all_p.gather(1, pos)
        return best_i.numpy(), np.asarray(self.poses_)[best_p.numpy()]  # (b, k), (b, k, 3)

    def _shortlist(self, real) -> np.ndarray:
        """``(n, prefilter)`` generated indices per real image: the nearest signatures to the real image's
        at each searched scale (a zoom scales the spectrum; a small turn moves little of it) and, with
        ``mirror``, of the mirrored image too, best first."""
        def signatures(scale: float, mirrored: bool) -> np.ndarray:  # a few real images at a time: bounded memory
            return np.concatenate([_signature(self._spectra(_transform(np.asarray(real[a:a + 256]), 0.0, scale, mirrored),
                                                            self.coarse_size_)) for a in range(0, len(real), 256)])

        views = [(s, m) for m in ((False, True) if self.mirror else (False,)) for s in self.scales]
        d, i = zip(*(knn_distances(signatures(s, m), self.signatures_, k=self.prefilter, metric="cosine",
                                   device=self.device, progress=False) for s, m in views))
        d, i = np.concatenate(d, 1), np.concatenate(i, 1)
        out = np.empty((len(real), self.prefilter), np.int64)
        for row in range(len(real)):
            order = i[row, np.argsort(d[row], kind="stable")]
            _, first = np.unique(order, return_index=True)
            out[row] = order[np.sort(first)][:self.prefilter]
        return out

    def _prefiltered(self, r, offset: int, pairs: list | None, allowed: np.ndarray):
        """``_coarse`` over each real image's own candidates ``allowed[i]``; every pair measured is added to
        ``pairs`` (for the rivals)."""
        size, (b, m) = self.coarse_size_, allowed.shape
        k = min(self.candidates, m)
        values = torch.empty((b, m))
        poses = torch.empty((b, m), dtype=torch.long)
        step = max(1, 2 ** 22 // (size * (size // 2 + 1)))  # spectra gathered at a time (32 MB)
        for i in range(b):
            for start in range(0, m, step):
                g = self.coarse_[torch.as_tensor(allowed[i, start:start + step])]  # (s, ...)
                v, p = self._best_shift(r[i], g, size).cpu().max(0)  # over poses: (s,)
                values[i, start:start + len(v)], poses[i, start:start + len(v)] = v, p
        best_v, pos = values.topk(k, dim=1)
        best_i = torch.as_tensor(allowed).gather(1, pos)
        best_p = poses.gather(1, pos)
        if pairs is not None:
            pairs.append((allowed.ravel(), np.repeat(np.arange(offset, offset + b), m), values.numpy().ravel(),
                          poses.numpy().ravel()))
        return best_i.numpy(), np.asarray(self.poses_)[best_p.numpy()]

    def _fine(self, x, ids, pose, rows=None) -> np.ndarray:
        """``(b, k)`` full-resolution correlations of each real image with its candidates, around the
        coarse ``pose`` (``(b, k, 3)``; half a step either way in rotation and in scale, mirrored as it
        was); with ``local_tile``, the local correlation at the best pose and shift (``_local``).

        ``rows`` (``b * k``): which image of ``x`` each pair is (default: ``x`` holds the ``b`` images, each
        with its ``k`` candidates)."""
        s = self.image_size
        x = np.asarray(x)
        rows = np.repeat(np.arange(len(x)), ids.shape[1]) if rows is None else np.asarray(rows)
        angles, scales, mirrored = pose[..., 0].ravel(), pose[..., 1].ravel(), pose[..., 2].ravel() > 0.5
        uniq, inverse = np.unique(ids, return_inverse=True)
        where = torch.as_tensor(inverse.reshape(-1))
        g_uniq = [self._spectra(self.generated_[uniq], s, band) for band in self.bands]
        d_angle = (-self.rotation_step / 2, 0.0, self.rotation_step / 2) if len(self.angles) > 1 else (0.0,)
        d_scale = (-self.scale_step / 2, 0.0, self.scale_step / 2) if len(self.scales) > 1 else (0.0,)
        offsets = [(da, ds) for da in d_angle for ds in d_scale]
        best = torch.full(ids.shape, -np.inf)
        best_at = torch.zeros(ids.shape, dtype=torch.long)  # index into offsets x shifts x shifts
        for o, (da, ds) in enumerate(offsets):
            # Each candidate is compared with the real image posed as its coarse best (+ offsets), in
            # every band; the bands' correlations are averaged (fine detail and broader structure).
            posed, at_pair = _posed(x, rows, angles + da, scales + ds, mirrored)
            maps = torch.stack([self._shift_map(self._spectra(posed, s, band)[at_pair].reshape(*ids.shape, s, s // 2 + 1),
                                                g[where].reshape(*ids.shape, s, s // 2 + 1), s)
                                for band, g in zip(self.bands, g_uniq)]).mean(0).flatten(-2).cpu()
            v, at = maps.max(-1)
            better = v > best
            best, best_at = torch.where(better, v, best), torch.where(better, at + o * maps.shape[-1], best_at)
        if not self.local_tile:
            return best.numpy()
        idx = self._shifts(s).cpu().numpy()
        o, t = np.divmod(best_at.numpy().ravel(), len(idx) ** 2)
        dy, dx = idx[t // len(idx)], idx[t % len(idx)]
        da, ds = np.asarray(offsets)[o].T
        posed, at_pair = _posed(x, rows, angles + da, scales + ds, mirrored)
        # Each real image moved by its best shift, in one step for all pairs: a phase ramp on its spectrum.
        fy = torch.fft.fftfreq(s, device=self.device)[None, :, None]
        fx = torch.fft.rfftfreq(s, device=self.device)[None, None, :]
        dy, dx = (torch.as_tensor(v, dtype=torch.float32, device=self.device)[:, None, None] for v in (dy, dx))
        phase = 2 * np.pi * (fy * dy + fx * dx)
        ramp = torch.polar(torch.ones_like(phase), phase)
        local = []
        for band, g in zip(self.bands, g_uniq):
            a = torch.fft.irfft2(self._spectra(posed, s, band)[at_pair] * ramp, s=(s, s))
            b = torch.fft.irfft2(g, s=(s, s))[where]
            local.append(_local(a, b, *self._tile(), self.local_penalty))
        return torch.stack(local).mean(0).reshape(ids.shape).cpu().numpy()

    @torch.no_grad()
    def _score(self, real, others=None):
        real = as_pixels(real)
        n, k = len(real), min(self.candidates, len(self.generated_))
        for images in (real, others):
            size = None if images is None else as_pixels(images).shape[-1]
            if size not in (None, self.image_size):
                raise VitprintError(f"align_nn works on {self.image_size} px images, got {size} px")
        if others is not None and self.relative:  # the job's other real images: rivals only, not scored
            real = np.concatenate([np.asarray(real), np.asarray(as_pixels(others))])
        ids = np.zeros((n, k), np.int64)
        ncc = np.zeros((n, k))
        m = len(self.generated_)
        allowed = self._shortlist(real) if self.signatures_ is not None else None  # a large generated set
        pairs = [] if allowed is not None and self.relative else None
        reverse = (torch.full((m, RIVALS), -2.0), torch.full((m, RIVALS), -1, dtype=torch.long),
                   torch.zeros((m, RIVALS), dtype=torch.long)) if self.relative and allowed is None else None
        chunk = max(1, 256 // (k * len(self.scales)))
        for start in bar(range(0, len(real), chunk), desc="aligning", unit="batch"):
            x = np.asarray(real[start:start + chunk])
            cand, pose = self._coarse(x, start, reverse if pairs is None else pairs,
                                      None if allowed is None else allowed[start:start + len(x)])
            if start >= n:
                continue  # another image of the job: only its coarse alignments (the rivals' table) count
            x, cand, pose = x[:n - start], cand[:n - start], pose[:n - start]
            ids[start:start + len(x)] = cand
            ncc[start:start + len(x)] = self._fine(x, cand, pose)
        if pairs:
            reverse = _reverse(m, *map(np.concatenate, zip(*pairs)))
        rows = np.arange(n)
        if not self.relative:
            arg = ncc.argmax(1)
            return ncc[rows, arg], ids[rows, arg]
        return self._relative(real, ids, ncc, reverse)

    def _relative(self, real, ids, ncc, reverse):
        """The margin of each real image's best candidates over their rivals (see the module's text).

        ``real``: the ``len(ids)`` scored images, then any others that are rivals only."""
        n, k = ids.shape
        top = np.argsort(-ncc, 1)[:, :min(TOP, k)]  # the candidates that can decide: the best few
        judged = np.unique(np.take_along_axis(ids, top, 1))
        # Rivals: every judged generated image against the real images that align best with it coarsely.
        rev_v, rev_i, rev_p = (t[judged].numpy() for t in reverse)
        known = set(zip(np.repeat(np.arange(n), k), ids.ravel()))
        extra = [(int(i), int(g), int(p)) for g, row_i, row_p, row_v in zip(judged, rev_i, rev_p, rev_v)
                 for i, p, v in zip(row_i, row_p, row_v) if v > -2 and (i, g) not in known]
        rows, cols, vals = [np.repeat(np.arange(n), k)], [ids.ravel()], [ncc.ravel()]
        if extra:
            e_i, e_g, e_p = map(np.asarray, zip(*extra))
            pose = np.asarray(self.poses_)[e_p]
            for start in range(0, len(e_i), 256):
                sl = slice(start, start + 256)
                images, which = np.unique(e_i[sl], return_inverse=True)  # each real image posed once per pose
                v = self._fine(np.asarray(real[images]), e_g[sl, None], pose[sl, None], which.reshape(-1))
                rows.append(e_i[sl]), cols.append(e_g[sl]), vals.append(v[:, 0])
        rows, cols, vals = map(np.concatenate, (rows, cols, vals))
        _, same = np.unique(pixel_hashes(real), return_inverse=True)
        rival = rivals(rows, cols, vals, same)[:n * k].reshape(n, k)
        alone = ~np.isfinite(rival)  # no other real image to compare with: the image's typical candidate
        rival = np.where(alone, np.median(ncc, 1, keepdims=True), rival)
        margin = np.take_along_axis(ncc - rival, top, 1)
        lone = np.take_along_axis(alone, top, 1)
        arg = np.take_along_axis(top, margin.argmax(1)[:, None], 1)[:, 0]
        best = margin.max(1)
        # A generator that copied an image often leaves several copies: their margins add up (a generated
        # image repeated pixel for pixel counts once). A margin over the median stand-in rival is on another
        # scale: of those, only the largest counts. Where no candidate wins over its rival, the score is
        # the closest one came (negative).
        distinct = self.distinct_[np.take_along_axis(ids, top, 1)]
        won = np.clip(margin, 0, None)
        for row in np.flatnonzero(best > 0):
            _, first = np.unique(distinct[row], return_index=True)
            won[row, np.setdiff1d(np.arange(won.shape[1]), first)] = 0
        summed = np.where(lone, 0, won).sum(1) + np.where(lone, won, 0).max(1)
        return np.where(best > 0, summed, best), ids[np.arange(n), arg]
