"""One run per output folder: an exclusive lock held while a command writes there.

The lock is ``<folder>/.vitprint.lock``, holding the PID and command of its
holder. On POSIX it is an ``flock`` on that file, which the operating system
drops when the holder dies, so a lock left by a killed run is never stale;
elsewhere the file is created exclusively and taken over when its PID is no
longer alive. A second run into the same folder gets one line naming the
folder and the holder.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
from pathlib import Path

from vitprint.errors import VitprintError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

log = logging.getLogger(__name__)

LOCK_NAME = ".vitprint.lock"
_held: dict[Path, int] = {}  # folders this process holds, with a count: nested steps reuse the lock


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        return "another process"
    return text.replace("\n", ", ") or "another process"


@contextlib.contextmanager
def run_lock(folder: str | Path):
    """Hold ``folder`` (created if missing) for this process until the block ends."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VitprintError(f"cannot use {folder} as the output folder: {exc.strerror or exc}", "out") from None
    key = folder.resolve()
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    path = folder / LOCK_NAME
    me = f"PID {os.getpid()}\n{' '.join(sys.argv[:6])}"
    if fcntl is not None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise VitprintError(f"cannot write to the output folder {folder}: {exc.strerror or exc}", "out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                # A file system without locks (some network mounts): run unlocked rather than refuse forever.
                log.warning("cannot lock %s (%s); running without the one-run-per-folder guard", folder,
                            exc.strerror or exc)
                os.close(fd)
                yield
                return
            os.close(fd)
            raise VitprintError(f"{folder} is in use by another vitprint run ({_holder(path)}); wait for it or "
                                "choose another output folder", "out") from None
        os.ftruncate(fd, 0)
        os.write(fd, me.encode())
    else:
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                break
            except FileExistsError:
                text = _holder(path)
                pid = int(text.split()[1].rstrip(",")) if text.startswith("PID ") else None
                if pid is not None and _pid_alive(pid):
                    raise VitprintError(f"{folder} is in use by another vitprint run ({text}); wait for it or "
                                        "choose another output folder", "out") from None
                log.warning("taking over the lock of %s left by a run that is gone (%s)", folder, text)
                path.unlink(missing_ok=True)
        os.write(fd, me.encode())
    _held[key] = 1
    try:
        yield
    finally:
        del _held[key]
        if fcntl is None:
            path.unlink(missing_ok=True)
        os.close(fd)  # closing drops the flock
