"""Finding images on disk: flat folders and class-folder trees."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vitprint.data.readers import is_image_file
from vitprint.errors import VitprintError

SPLIT_NAMES = {"train": ("train", "training"), "valid": ("valid", "val", "validation"), "test": ("test",)}


def list_images(folder: str | Path) -> list[Path]:
    """Every image file below ``folder`` (recursively), in a stable sorted order.

    Hidden files and folders (a name starting with '.') are passed over.
    """
    root = Path(folder)
    if not root.is_dir():
        raise VitprintError(f"not a folder: {root}")
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and is_image_file(p)
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise VitprintError(f"no images found in {root} (looked for PNG, JPEG, BMP, TIFF, DICOM, NIfTI)")
    return files


def base_class(folder_name: str) -> str:
    """The class a folder stands for: the part before the first '_'.

    The Kaggle chest-CT set names some training folders with a TNM suffix
    (``adenocarcinoma_left.lower.lobe_T2_N0_M0_Ib``) that means the same class.
    """
    return folder_name.split("_", 1)[0]


@dataclass
class LabelledFiles:
    """Files with integer labels; ``classes[label]`` names each."""

    files: list[Path]
    labels: list[int]
    classes: list[str]


def _class_folders(root: Path) -> dict[str, list[Path]]:
    found: dict[str, list[Path]] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found.setdefault(base_class(sub.name), []).extend(list_images(sub))
    if not found:
        raise VitprintError(f"no class folders found in {root}")
    return found


def _split_folder(root: Path, split: str) -> Path | None:
    for name in SPLIT_NAMES[split]:
        if (root / name).is_dir():
            return root / name
    return None


def class_tree(root: str | Path, val_fraction: float = 0.15, seed: int = 0) -> dict[str, LabelledFiles]:
    """Train/valid(/test) splits of a class-folder tree.

    With ``train/`` and ``valid/`` (or ``val/``) folders, those are used as they
    are (``test/`` too, when present); otherwise ``root/<class>/`` folders are
    split per class by a seeded ``val_fraction``.
    """
    root = Path(root)
    if not root.is_dir():
        raise VitprintError(f"not a folder: {root}")
    train_dir = _split_folder(root, "train")
    if train_dir is not None:
        valid_dir = _split_folder(root, "valid")
        if valid_dir is None:
            raise VitprintError(f"{root} has a train/ folder but no valid/ (or val/) folder")
        per_split = {"train": _class_folders(train_dir), "valid": _class_folders(valid_dir)}
        test_dir = _split_folder(root, "test")
        if test_dir is not None:
            per_split["test"] = _class_folders(test_dir)
        classes = sorted(per_split["train"])
        for split, found in per_split.items():
            extra = sorted(set(found) - set(classes))
            if extra:
                raise VitprintError(f"{split}/ has classes not in train/: {', '.join(extra)}")
    else:
        if not 0 < val_fraction < 1:
            raise VitprintError(f"val_fraction must be in (0, 1), got {val_fraction}")
        found = _class_folders(root)
        classes = sorted(found)
        rng = np.random.default_rng(seed)
        per_split = {"train": {}, "valid": {}}
        for name, files in found.items():
            order = rng.permutation(len(files))
            n_val = max(1, round(len(files) * val_fraction)) if len(files) > 1 else 0
            per_split["valid"][name] = [files[i] for i in sorted(order[:n_val])]
            per_split["train"][name] = [files[i] for i in sorted(order[n_val:])]
    out = {}
    for split, found in per_split.items():
        files, labels = [], []
        for name in classes:
            for f in found.get(name, []):
                files.append(f)
                labels.append(classes.index(name))
        out[split] = LabelledFiles(files, labels, classes)
    return out
