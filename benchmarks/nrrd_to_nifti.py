"""Write NRRD CT volumes as NIfTI, so `vitprint bench --ct` (NIfTI or DICOM) can read them.

pyradiomics 3.0.1's test data holds two chest CT volumes in NRRD (nothing is downloaded by this script):

    curl -O https://files.pythonhosted.org/packages/1b/35/c7f7fb7affd302fd8107dcee6b6e7aaf3708b75ad69d5f9a3dfcadb73eaa/pyradiomics-3.0.1.tar.gz
    tar xzf pyradiomics-3.0.1.tar.gz pyradiomics-3.0.1/data/lung1_image.nrrd pyradiomics-3.0.1/data/lung2_image.nrrd
    python benchmarks/nrrd_to_nifti.py pyradiomics-3.0.1/data/lung*_image.nrrd

Each ``X.nrrd`` becomes ``X.nii.gz`` beside it: the same voxels (as int16 HU), its NRRD space directions
and origin turned from LPS into the RAS affine NIfTI uses. Reading NRRD needs ``pynrrd``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def nifti_affine(header: dict) -> np.ndarray:
    """The RAS voxel-to-world affine NIfTI stores, from an NRRD header in LPS space (ValueError otherwise)."""
    if header.get("space") not in ("left-posterior-superior", "LPS"):
        raise ValueError(f"space {header.get('space')!r}: expected left-posterior-superior")
    missing = [k for k in ("space directions", "space origin") if k not in header]
    if missing:
        raise ValueError(f"the header has no {' or '.join(missing)}")
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(header["space directions"], float).T  # columns: each voxel axis's step
    affine[:3, 3] = header["space origin"]
    return LPS_TO_RAS @ affine


def nrrd_to_nifti(path: Path) -> Path:
    import nibabel as nib
    import nrrd

    data, header = nrrd.read(str(path))
    out = path.with_name(path.name[: -len(".nrrd")] + ".nii.gz")
    nib.save(nib.Nifti1Image(data.astype(np.int16), nifti_affine(header)), str(out))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("volumes", nargs="+", type=Path, help="NRRD files (.nrrd)")
    for path in p.parse_args(argv).volumes:
        if not path.name.endswith(".nrrd"):
            p.exit(2, f"{path}: not a .nrrd file\n")
        try:
            print(nrrd_to_nifti(path))
        except Exception as exc:  # an unreadable file or header: one line, not a traceback
            p.exit(2, f"{path}: {exc}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
