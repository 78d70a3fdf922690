"""Generated blocks in hand-written results pages.

A results page keeps its author's reading around a block that a command rewrites:
everything between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` is generated, the
rest is never touched. Files are written beside their targets and renamed, so a failed
write leaves every target as it was.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from relcore.errors import RelcoreError


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def replace_block(page: str, block: str, name: str) -> str:
    """``page`` with the text between ``name``'s markers replaced by ``block``."""
    begin, end = markers(name)
    if page.count(begin) != 1 or page.count(end) != 1 or page.index(begin) > page.index(end):
        raise RelcoreError(f"the page needs exactly one '{begin}' followed by one '{end}'")
    head, rest = page.split(begin)
    return head + begin + "\n" + block + "\n" + end + rest.split(end, 1)[1]


def write_all(writes: list[tuple[Path, Callable[[Path], object]]]) -> None:
    """Run each ``write(tmp)`` on a temporary file beside its target, then rename them all;
    on an error none of the targets changes (:class:`RelcoreError` names the file)."""
    staged = []
    try:
        for target, write in writes:
            tmp = target.with_name(target.name + ".tmp")
            staged.append((tmp, target))
            write(tmp)
    except OSError as e:
        for tmp, _ in staged:
            with contextlib.suppress(OSError):  # the failed one may not even have a folder
                tmp.unlink(missing_ok=True)
        raise RelcoreError(f"cannot write {staged[-1][1]}: {e.strerror or e}") from None
    for tmp, target in staged:
        tmp.replace(target)
