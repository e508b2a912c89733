"""No image may sit in two roles: an image among the scored ones and in the reference (or labelled
both used and not used) scores perfectly for the wrong reason.

Roles are compared by resolved path and by pixel hash before any work. Real
images in two of members / non-members / unknown are an error naming both
files. The reference set may overlap the real images on purpose (the
held-out images serve as the reference): those images are cross-fitted by
the detectors and counted here so the report can say so. Generated images
are compared with the real ones by path only: a generated image with the
same pixels as a real one is a perfect copy, the strongest evidence of a
leak, not a mistake in the inputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vitprint.errors import VitprintError
from vitprint.membership.base import pixel_hashes

ROLE_NAMES = {"member": "used (members)", "non_member": "not used (non-members)", "unknown": "unknown",
              "reference": "reference", "generated": "generated"}


def _first_clash(a_keys, b_keys) -> tuple[int, int] | None:
    index = {k: i for i, k in enumerate(b_keys)}
    for i, k in enumerate(a_keys):
        if k in index:
            return i, index[k]
    return None


def check_roles(real_paths, real_groups, real_pixels, generated_paths, reference_paths=None,
                reference_pixels=None) -> dict[str, int]:
    """Raise on an image in two real roles or a file both generated and real; return overlap counts.

    Returns ``{"reference_overlap": n}``: real images that are also reference
    images (they will be cross-fitted).
    """
    groups = np.asarray(real_groups)
    paths = [str(Path(p).resolve()) for p in real_paths]
    hashes = pixel_hashes(real_pixels)
    roles = [g for g in ROLE_NAMES if (groups == g).any()]
    for i, ga in enumerate(roles):
        for gb in roles[i + 1:]:
            ia, ib = np.flatnonzero(groups == ga), np.flatnonzero(groups == gb)
            for what, keys in (("the same file", paths), ("identical pixels", hashes)):
                clash = _first_clash([keys[j] for j in ia], [keys[j] for j in ib])
                if clash:
                    a, b = ia[clash[0]], ib[clash[1]]
                    raise VitprintError(f"an image is both {ROLE_NAMES[ga]} and {ROLE_NAMES[gb]} ({what}): "
                                        f"{real_paths[a]} and {real_paths[b]}")
    gen = {str(Path(p).resolve()) for p in generated_paths}
    both = [p for p in real_paths if str(Path(p).resolve()) in gen]
    if both:
        raise VitprintError(f"{len(both)} file(s) are both generated and real, e.g. {both[0]}")
    overlap = 0
    if reference_paths is not None:
        ref_gen = [p for p in reference_paths if str(Path(p).resolve()) in gen]
        if ref_gen:
            raise VitprintError(f"{len(ref_gen)} file(s) are both generated and reference, e.g. {ref_gen[0]}")
        ref_keys = set(pixel_hashes(reference_pixels)) | {str(Path(p).resolve()) for p in reference_paths}
        shared = [i for i, (p, h) in enumerate(zip(paths, hashes)) if p in ref_keys or h in ref_keys]
        used = [i for i in shared if groups[i] == "member"]
        if used:
            raise VitprintError(f"{len(used)} used image(s) are also in the reference set, which must hold images "
                                f"the generator never saw, e.g. {real_paths[used[0]]}")
        overlap = len(shared)
    return {"reference_overlap": overlap}
