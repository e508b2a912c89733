"""Progress bars: tqdm, silenced by ``--quiet`` (VITPRINT_QUIET=1) and off when not on a terminal."""

from __future__ import annotations

import os

from tqdm.auto import tqdm


def bar(iterable=None, enabled: bool = True, **kwargs) -> tqdm:
    """A tqdm bar; ``enabled=False`` or VITPRINT_QUIET=1 hides it, None lets tqdm hide it off a TTY."""
    quiet = os.environ.get("VITPRINT_QUIET") == "1"
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, disable=True if (quiet or not enabled) else None, **kwargs)
