"""Decoded images held as one uint8 array, cached on disk so nothing decodes twice.

A set of files read at size S is cached as ``<key>.npy`` (``(N, S, S)`` uint8)
plus ``<key>.json`` (item ids, source file per item, skipped files), where the
key hashes every file's path, byte size and modification time together with S
and the read options. Changing, adding or removing a file gives a new key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vitprint.data.readers import ReadOptions, UnreadableImage, read_file, resize_to_uint8
from vitprint.errors import VitprintError
from vitprint.progress import bar

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    env = os.environ.get("VITPRINT_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vitprint"


@dataclass
class ImageSet:
    """``pixels[i]`` is image ``ids[i]`` read from ``paths[i]``; ``(N, S, S)`` uint8."""

    ids: list[str]
    paths: list[Path]
    pixels: np.ndarray
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def size(self) -> int:
        return int(self.pixels.shape[-1])

    @classmethod
    def from_pixels(cls, pixels: np.ndarray, prefix: str) -> "ImageSet":
        """Images that come as an array, named ``<prefix>_00000.png`` ... (no file behind them)."""
        pixels = np.asarray(pixels)
        if pixels.ndim != 3 or pixels.dtype != np.uint8:
            raise VitprintError(f"the {prefix} images must be a uint8 array (N, S, S), got {pixels.dtype} {pixels.shape}")
        names = [f"{prefix}_{i:05d}" for i in range(len(pixels))]
        return cls(names, [Path(n + ".png") for n in names], pixels)


def _cache_key(files: list[Path], size: int, opts: ReadOptions) -> str:
    h = hashlib.sha1()
    h.update(json.dumps({"size": size, "window": opts.window, "max_pixels": opts.max_pixels, "v": 2}).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def save_npy(path, array) -> None:
    """``np.save`` to exactly ``path`` (given a name, numpy would append ``.npy``), closing the file."""
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()  # read once: os.umask can only be read by setting it


def atomic_write(path: Path, write) -> None:
    """Write ``path`` through ``write(tmp)`` on a temporary file beside it, then rename: a crash leaves the
    old file or the new one, never half of one. The file gets the permissions a plain ``open`` would give
    (the temporary file is created private)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _decode(files: list[Path], size: int, opts: ReadOptions, show_progress: bool):
    ids, sources, arrays, skipped = [], [], [], []
    common = Path(os.path.commonpath([f.parent for f in files])) if files else Path(".")
    for idx, f in enumerate(bar(files, enabled=show_progress, desc="decoding", unit="file")):
        try:
            images = read_file(f, opts)
        except UnreadableImage as exc:
            skipped.append(f"{f}: {exc}")
            continue
        rel = f.relative_to(common).as_posix()
        for k, img in enumerate(images):
            ids.append(rel if len(images) == 1 else f"{rel}#{k:04d}")
            sources.append(idx)
            arrays.append(resize_to_uint8(img, size))
    pixels = np.stack(arrays) if arrays else np.zeros((0, size, size), np.uint8)
    return ids, sources, pixels, skipped


def _read_cache(meta_path: Path, npy_path: Path, size: int):
    """A cache entry's ``(ids, sources, pixels, skipped)``, or None when there is none. A damaged entry
    (cut short by a crash or a full disk, edited by hand) is discarded with a warning and rebuilt."""
    if not (meta_path.is_file() and npy_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        ids, sources, skipped = meta["ids"], meta["sources"], meta["skipped"]
        pixels = np.load(npy_path, mmap_mode="r")
        if pixels.dtype != np.uint8 or pixels.shape[1:] != (size, size) or not len(pixels) == len(ids) == len(sources):
            raise ValueError(f"holds {pixels.dtype} {pixels.shape} for {len(ids)} ids")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("the decode cache entry %s is damaged (%s); decoding the images again", npy_path, exc)
        for path in (meta_path, npy_path):
            path.unlink(missing_ok=True)
        return None
    return ids, sources, pixels, skipped


def load_images(
    files: list[Path],
    size: int,
    opts: ReadOptions = ReadOptions(),
    cache_dir: Path | None = None,
    strict: bool = False,
    labels: list[int] | None = None,
    what: str = "images",
    show_progress: bool = True,
) -> ImageSet:
    """Decode (or fetch from the cache) ``files`` at ``size`` x ``size``.

    Unreadable files are skipped with one warning naming each; with ``strict``
    they are an error. ``cache_dir=None`` turns the cache off.
    """
    files = [Path(f) for f in files]
    if not files:
        raise VitprintError(f"no {what} to read")
    key = _cache_key(files, size, opts)
    meta_path = cache_dir / f"{key}.json" if cache_dir else None
    npy_path = cache_dir / f"{key}.npy" if cache_dir else None
    cached = _read_cache(meta_path, npy_path, size) if meta_path is not None else None
    if cached is not None:
        ids, sources, pixels, skipped = cached
        log.debug("read %d %s from cache %s", len(ids), what, npy_path)
    else:
        ids, sources, pixels, skipped = _decode(files, size, opts.for_size(size), show_progress)
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(npy_path, lambda tmp: save_npy(tmp, pixels))
            meta = {"ids": ids, "sources": sources, "skipped": skipped}
            atomic_write(meta_path, lambda tmp: Path(tmp).write_text(json.dumps(meta)))
    if skipped:
        listing = "; ".join(skipped)
        if strict:
            raise VitprintError(f"{len(skipped)} unreadable file(s) among the {what}: {listing}")
        log.warning("skipped %d unreadable file(s) among the %s: %s", len(skipped), what, listing)
    if len(ids) == 0:
        raise VitprintError(f"none of the {len(files)} {what} could be read")
    label_arr = None
    if labels is not None:
        label_arr = np.asarray([labels[s] for s in sources], dtype=np.int64)
    return ImageSet(ids, [files[s] for s in sources], pixels, label_arr)
