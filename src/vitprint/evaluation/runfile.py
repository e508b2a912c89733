"""The challenge's run files, written and parsed here only.

Subtask 1 (membership): one ``<id>,<0|1>`` line per real test image. Subtask 2
(attribution): one ``<id>,<subset>`` line per generated test image. No header.
"""

from __future__ import annotations

from pathlib import Path

from vitprint.data.folders import list_images
from vitprint.data.outputs import swap_pending
from vitprint.errors import VitprintError


def run_id(path: str | Path, names: bool = False) -> str:
    """An image's id in a run file: its stem (the 2023 validator's form) or, with ``names``, its file name."""
    p = Path(path)
    return p.name if names else p.stem


def write_run(path: str | Path, ids: list[str], labels, names: bool = False) -> Path:
    """Write the run file; ``ids`` are image paths or names, ``labels`` 0/1."""
    return _write_lines(path, ids, [str(int(lab)) for lab in labels], names)


def write_attribution_run(path: str | Path, ids: list[str], subsets: list[str], names: bool = False) -> Path:
    """Write the attribution run file: ``<id>,<subset>`` per generated image."""
    bad = [s for s in subsets if not s or any(c in s for c in ",\n\r")]
    if bad:
        raise VitprintError(f"the subset name {bad[0]!r} cannot be written in a run file (empty, a comma or a line break)")
    return _write_lines(path, ids, list(subsets), names)


def _write_lines(path: str | Path, ids: list[str], values: list[str], names: bool) -> Path:
    lines = []
    seen = set()
    for i, value in zip(ids, values):
        rid = run_id(i, names)
        if rid in seen:
            raise VitprintError(f"two test images share the id {rid!r}; write file names instead of stems", "run_names")
        seen.add(rid)
        lines.append(f"{rid},{value}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def read_run(path: str | Path) -> list[tuple[int, str]]:
    """``(line number, text)`` of every line of a run file: UTF-8 (with or without BOM) or UTF-16 with a BOM,
    LF or CRLF. An empty or undecodable file is one clear error."""
    path = Path(path)
    if not path.is_file():
        raise VitprintError(f"run file not found: {path}")
    if swap_pending(path.parent):
        raise VitprintError(f"{path.parent} is halfway through replacing its outputs (a job stopped while moving "
                            "them in); run that job again to finish, then read the run file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-16") if data[:2] in (b"\xff\xfe", b"\xfe\xff") else data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise VitprintError(f"{path} is not a text file (expected UTF-8 '<id>,<label>' lines)") from None
    lines = list(enumerate(text.splitlines(), 1))
    if not any(raw.strip() for _, raw in lines):
        raise VitprintError(f"{path} is empty")
    return lines


def parse_run(path: str | Path) -> tuple[list[str], list[int]]:
    """Ids and 0/1 labels of a run file; any malformed or repeated line is an error naming its line."""
    ids, labels = _parse_lines(path, ("0", "1"), "'<id>,<0|1>'", " (check it with 'vitprint validate-run')")
    return ids, [int(v) for v in labels]


def parse_attribution_run(path: str | Path, subsets: list[str]) -> tuple[list[str], list[str]]:
    """Ids and subset names of an attribution run file (or a truth CSV in the same form)."""
    return _parse_lines(path, tuple(subsets), f"'<id>,<subset>' with a subset among {', '.join(subsets)}", "")


def _parse_lines(path, allowed: tuple[str, ...], form: str, hint: str) -> tuple[list[str], list[str]]:
    ids, labels, seen = [], [], {}
    for n, raw in read_run(path):
        if not raw.strip():
            continue
        parts = [p.strip() for p in raw.split(",")]
        if len(parts) != 2 or parts[1] not in allowed:
            raise VitprintError(f"{path} line {n}: expected {form}, got {raw!r}{hint}")
        key = Path(parts[0]).stem
        if key in seen:
            raise VitprintError(f"{path} line {n}: {parts[0]!r} repeats line {seen[key]}")
        seen[key] = n
        ids.append(parts[0])
        labels.append(parts[1])
    return ids, labels


def validate_run(path: str | Path, image_dir: str | Path) -> list[str]:
    """The task validator's rules; returns one message per problem (empty: valid).

    Each id must name an image of ``image_dir`` (by stem or by file name), appear
    once, and carry label 0 or 1; every image must appear.
    """
    lines = read_run(path)
    images = list_images(image_dir)
    by_stem = {p.stem: p.name for p in images}
    by_name = {p.name: p.name for p in images}
    problems, seen = [], {}
    for n, raw in lines:
        line = raw.strip()
        if not line:
            problems.append(f"line {n}: empty line")
            continue
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 2:
            problems.append(f"line {n}: expected '<image id>,<label>', got {raw!r}")
            continue
        rid, label = parts
        image = by_name.get(rid) or by_stem.get(rid)
        if image is None:
            problems.append(f"line {n}: unknown image id {rid!r}")
        elif image in seen:
            problems.append(f"line {n}: {rid!r} repeats line {seen[image]}")
        else:
            seen[image] = n
        if label not in ("0", "1"):
            problems.append(f"line {n}: label must be 0 or 1, got {label!r}")
    missing = sorted(set(by_name) - set(seen))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        problems.append(f"missing {len(missing)} image(s): {shown}")
    return problems
