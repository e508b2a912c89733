"""Exact k-nearest-neighbour distances, batched on the device and memory-bounded.

The reference set is streamed in chunks (it may be a memory-mapped uint8 array
of hundreds of thousands of images) and a running top-k is kept per query, so
memory is bounded by ``query_chunk x ref_chunk`` whatever the set sizes.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from vitprint.data.dataset import to_model_range
from vitprint.errors import VitprintError
from vitprint.progress import bar

METRICS = ("l2", "cosine")


def _distances(q: torch.Tensor, r: torch.Tensor, metric: str) -> torch.Tensor:
    if metric == "cosine":
        return 1.0 - F.normalize(q, dim=1) @ F.normalize(r, dim=1).T
    # ||q - r||^2 expanded keeps it one matmul; clamp the rounding below zero.
    d2 = q.pow(2).sum(1, keepdim=True) - 2 * q @ r.T + r.pow(2).sum(1)[None]
    return d2.clamp_min_(0).sqrt_()


@torch.no_grad()
def knn_distances(
    queries: np.ndarray | torch.Tensor,
    refs,
    k: int = 1,
    metric: str = "l2",
    to_vectors: Callable[[np.ndarray], torch.Tensor] | None = None,
    device: torch.device | str = "cpu",
    query_chunk: int = 1024,
    ref_chunk: int = 4096,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Distances ``(N, k)`` (ascending) and indices ``(N, k)`` of each query's k nearest refs.

    ``refs`` is anything sliceable along its first axis (array, memmap, tensor);
    ``to_vectors`` turns a slice into ``(m, D)`` float vectors (default: flatten).
    """
    if metric not in METRICS:
        raise VitprintError(f"metric must be one of {METRICS}, got {metric!r}")
    n_ref = len(refs)
    if n_ref == 0:
        raise VitprintError("the reference set for nearest-neighbour search is empty")
    k = min(k, n_ref)
    device = torch.device(device)
    convert = to_vectors or (lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32)).flatten(1))
    q_all = convert(queries) if not isinstance(queries, torch.Tensor) else queries.float().flatten(1)
    out_d = np.empty((len(q_all), k), np.float32)
    out_i = np.empty((len(q_all), k), np.int64)
    for qs in range(0, len(q_all), query_chunk):
        q = q_all[qs:qs + query_chunk].to(device)
        best_d = torch.full((len(q), k), float("inf"), device=device)
        best_i = torch.zeros((len(q), k), dtype=torch.long, device=device)
        for rs in bar(range(0, n_ref, ref_chunk), enabled=progress and n_ref > ref_chunk,
                      desc="nearest neighbours", unit="chunk"):
            r = convert(refs[rs:rs + ref_chunk]).to(device)
            d = _distances(q, r, metric)
            cand_d = torch.cat([best_d, d], 1)
            cand_i = torch.cat([best_i, torch.arange(rs, rs + len(r), device=device).expand(len(q), -1)], 1)
            best_d, pos = cand_d.topk(k, dim=1, largest=False, sorted=True)
            best_i = cand_i.gather(1, pos)
        out_d[qs:qs + len(q)] = best_d.cpu().numpy()
        out_i[qs:qs + len(q)] = best_i.cpu().numpy()
    return out_d, out_i


def pixel_vectors(size: int) -> Callable[[np.ndarray], torch.Tensor]:
    """uint8 ``(m, S, S)`` -> ``(m, size*size)`` float vectors in [-1, 1], area-downsampled."""

    def convert(u8) -> torch.Tensor:
        x = to_model_range(u8)[:, None]
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="area")
        return x.flatten(1)

    return convert


def thumbnails(images, size: int) -> np.ndarray:
    """``(m, size*size)`` float64 thumbnails in [-1, 1] of uint8 images (the density and classifier peers'
    feature space)."""
    return pixel_vectors(size)(np.asarray(getattr(images, "pixels", images))).numpy().astype(np.float64)
