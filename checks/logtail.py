"""Follow a log file across rotation and agent restarts: every complete line once, none lost, none twice.

The position (device, inode, offset, a fingerprint of the file's first bytes) is kept by the caller
and saved with whatever it derived from the lines, so a restart resumes exactly where it stopped.
Rotation by rename (logrotate's default, clamd's LogRotate) is followed into the rotated file to read
its tail; copytruncate and replacement start the new file from its beginning.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_HEAD = 256  # bytes fingerprinted to tell a new file from the old one under the same inode


@dataclass
class Position:
    dev: int = 0
    ino: int = 0
    offset: int = 0
    head: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"dev": self.dev, "ino": self.ino, "offset": self.offset, "head": self.head}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Position | None:
        if not d:
            return None
        return cls(int(d.get("dev", 0)), int(d.get("ino", 0)), int(d.get("offset", 0)), str(d.get("head", "")))


@dataclass
class TailResult:
    lines: list[bytes]
    position: Position
    notes: list[str] = field(default_factory=list)


def _head(f: Any, size: int) -> str:
    f.seek(0)
    data = f.read(min(_HEAD, size))
    return hashlib.sha1(data).hexdigest() if len(data) == _HEAD else ""


def _complete_lines(f: Any, start: int, limit: int) -> tuple[list[bytes], int]:
    """Whole lines from `start`; a trailing partial line is left for next time."""
    f.seek(start)
    data = f.read(limit)
    end = data.rfind(b"\n")
    if end < 0:
        return [], start
    chunk = data[: end + 1]
    return [ln.rstrip(b"\r") for ln in chunk.split(b"\n")[:-1]], start + len(chunk)


def _rotated_sibling(path: Path, dev: int, ino: int) -> Path | None:
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return None
    for p in siblings:
        if p == path or not p.name.startswith(path.name):
            continue
        try:
            st = p.stat()
        except OSError:
            continue
        if st.st_ino == ino and st.st_dev == dev:
            return p
    return None


def read_new(path: Path, pos: Position | None, from_start: bool = False, max_bytes: int = 4 << 20) -> TailResult:
    """Lines appended since `pos` (None: never read; start at the end unless from_start)."""
    notes: list[str] = []
    try:
        f = path.open("rb")
    except FileNotFoundError:
        # Between a rename and the product reopening its log: read what the rotated file gained.
        if pos is not None and (old := _rotated_sibling(path, pos.dev, pos.ino)) is not None:
            with old.open("rb") as g:
                lines, off = _complete_lines(g, pos.offset, max_bytes)
            return TailResult(lines, Position(pos.dev, pos.ino, off, pos.head), [f"reading rotated {old.name}"])
        return TailResult([], pos or Position(), [f"{path} does not exist"])
    with f:
        st = os.fstat(f.fileno())
        head = _head(f, st.st_size)
        if pos is None:
            if from_start:
                lines, off = _complete_lines(f, 0, max_bytes)
            else:  # history is not news: start after the last complete line
                back = min(st.st_size, 65536)
                f.seek(st.st_size - back)
                lines, off = [], st.st_size - back + f.read(back).rfind(b"\n") + 1
            return TailResult(lines, Position(st.st_dev, st.st_ino, off, head), notes)
        lines: list[bytes] = []
        same_file = (st.st_dev, st.st_ino) == (pos.dev, pos.ino)
        if not same_file:
            old = _rotated_sibling(path, pos.dev, pos.ino)
            if old is not None:
                with old.open("rb") as g:
                    tail, _ = _complete_lines(g, pos.offset, max_bytes)
                lines.extend(tail)
                notes.append(f"rotated to {old.name}: read its last {len(tail)} lines")
            else:
                notes.append("rotated file not found (compressed or removed): lines between reads may be missing")
            start = 0
        elif st.st_size < pos.offset or (pos.head and head and head != pos.head):
            notes.append("truncated or replaced in place: reading from the beginning")
            start = 0
        else:
            start = pos.offset
        new, off = _complete_lines(f, start, max_bytes)
        lines.extend(new)
        return TailResult(lines, Position(st.st_dev, st.st_ino, off, head or pos.head if same_file else head), notes)
