"""File events without dependencies: Linux inotify through ctypes, read on the asyncio loop.

Elsewhere (Windows, BSD, a kernel out of watches) `Inotify.open()` raises OSError and callers poll.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import os
import struct
import sys
from dataclasses import dataclass

IN_ACCESS = 0x001
IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ISDIR = 0x40000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len


@dataclass(frozen=True)
class FsEvent:
    folder: str
    name: str
    mask: int
    cookie: int


class Inotify:
    """One inotify descriptor; `await events()` returns the next batch of events."""

    def __init__(self, fd: int, libc: ctypes.CDLL) -> None:
        self.fd = fd
        self._libc = libc
        self._folders: dict[int, str] = {}
        self._ready = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def open(cls) -> Inotify:
        if not sys.platform.startswith("linux"):
            raise OSError(errno.ENOSYS, "inotify is Linux only")
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        return cls(fd, libc)

    def add(self, folder: str, mask: int) -> None:
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(folder), ctypes.c_uint32(mask))
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_add_watch {folder}: {os.strerror(err)}")
        self._folders[wd] = folder

    def _read(self) -> list[FsEvent]:
        out: list[FsEvent] = []
        while True:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                return out
            pos = 0
            while pos + _HEADER.size <= len(buf):
                wd, mask, cookie, size = _HEADER.unpack_from(buf, pos)
                raw = buf[pos + _HEADER.size : pos + _HEADER.size + size]
                pos += _HEADER.size + size
                name = os.fsdecode(raw.split(b"\0", 1)[0])
                out.append(FsEvent(self._folders.get(wd, ""), name, mask, cookie))

    async def events(self) -> list[FsEvent]:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            loop.add_reader(self.fd, self._ready.set)
            self._loop = loop
        while True:
            got = self._read()
            if got:
                return got
            self._ready.clear()
            await self._ready.wait()

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(self.fd)
        os.close(self.fd)

    def __enter__(self) -> Inotify:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
