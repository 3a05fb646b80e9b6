"""Write several files that belong together so that none of them is published without the others."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged(paths: Sequence[Path]) -> Iterator[dict[Path, Path]]:
    """Yield ``{final: temporary}`` names beside each of ``paths`` (``.<name>.tmp``); write to the
    temporary ones. On a clean exit every one is renamed to its final name; on any failure, and after
    the renames, no temporary file is left behind. A reader never sees one file of the set without the
    others, nor a half-written one."""
    tmp = {Path(p): Path(p).with_name(f".{Path(p).name}.tmp") for p in paths}
    for path in tmp:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
        for final, temporary in tmp.items():
            os.replace(temporary, final)
    finally:
        for temporary in tmp.values():
            temporary.unlink(missing_ok=True)
