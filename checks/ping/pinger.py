"""One ping round for many targets over one ICMP socket per address family, built on icmplib's socket layer.

Requests go out paced (at most `rate` a second in all, at least `packet_interval` apart for one
target); one reader per socket drains every reply and ICMP error as it arrives and matches it to
its request by identifier and sequence number. Raw sockets (root or CAP_NET_RAW) see every ICMP
packet of the host, so a kernel filter keeps only echo replies and errors; unprivileged datagram
sockets see only their own replies, and their ICMP errors come through the socket's error queue
(IP_RECVERR). A target's round ends answered, silently lost, refused with an ICMP error, or not
sendable at all — only an answer means reachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import random
import socket
import struct
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psutil
from icmplib import ICMPv4Socket, ICMPv6Socket
from icmplib.exceptions import ICMPLibError, SocketPermissionError

ANSWERED, LOST, REFUSED, UNSENDABLE = "answered", "lost", "refused", "unsendable"
PAYLOAD = (b"hisguard" * 7)[:56]  # 56 data bytes, as ping and fping send

# Linux socket options the socket module does not name.
SOL_RAW, ICMP_FILTER, ICMP6_FILTER = 255, 1, 1
IP_RECVERR, IPV6_RECVERR = 11, 25
SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6 = 2, 3
RCVBUF = 4 << 20  # replies of thousands of targets can arrive in one burst
TICK = 0.004  # pacing sends in small bursts: one wake-up per request would cost more than the request
# Linux stamps each packet when it arrives (SO_TIMESTAMPNS, a struct timespec): a reply that came in time
# still counts when a loaded machine lets the agent read it only later.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
TIMESPEC = struct.Struct("@ll")
STAMP_SPACE = socket.CMSG_SPACE(TIMESPEC.size) if hasattr(socket, "CMSG_SPACE") else 0

# ICMP error messages a request can draw (type → name; destination-unreachable codes below).
V4_ERRORS = {3: "unreachable", 4: "source-quench", 11: "time-exceeded", 12: "parameter-problem"}
V6_ERRORS = {1: "unreachable", 2: "packet-too-big", 3: "time-exceeded", 4: "parameter-problem"}
V4_UNREACH = {
    0: "net-unreachable", 1: "host-unreachable", 2: "protocol-unreachable", 3: "port-unreachable",
    4: "fragmentation-needed", 5: "source-route-failed", 6: "net-unknown", 7: "host-unknown",
    9: "net-prohibited", 10: "host-prohibited", 11: "net-unreachable-for-tos", 12: "host-unreachable-for-tos",
    13: "admin-prohibited", 14: "host-precedence-violation", 15: "precedence-cutoff",
}  # fmt: skip
V6_UNREACH = {
    0: "no-route", 1: "admin-prohibited", 2: "beyond-scope", 3: "address-unreachable", 4: "port-unreachable",
    5: "source-policy-failed", 6: "reject-route",
}  # fmt: skip


def icmp_error_name(version: int, icmp_type: int, code: int) -> str:
    if version == 4:
        return (
            V4_UNREACH.get(code, f"unreachable-{code}") if icmp_type == 3 else V4_ERRORS.get(icmp_type, str(icmp_type))
        )
    return V6_UNREACH.get(code, f"unreachable-{code}") if icmp_type == 1 else V6_ERRORS.get(icmp_type, str(icmp_type))


def oserror_text(exc: BaseException) -> str:
    """`ENETUNREACH: Network is unreachable` — the errno's name first, so it reads the same in any locale."""
    if isinstance(exc, OSError) and exc.errno:
        return f"{errno.errorcode.get(exc.errno, str(exc.errno))}: {exc.strerror or exc}"
    return str(exc) or exc.__class__.__name__


@dataclass
class TargetRound:
    """What one target's round saw."""

    address: str  # as configured
    ip: str | None = None  # what it resolved to
    sockaddr: tuple[Any, ...] | None = None
    sent: int = 0
    received: int = 0
    rtts_ms: list[float] = field(default_factory=list)
    send_errors: Counter[str] = field(default_factory=Counter)
    icmp_errors: Counter[str] = field(default_factory=Counter)  # "admin-prohibited from 10.0.0.1" → count
    neighbour_silent: int = 0  # this host itself reported the target unreachable: no ARP/ND answer on the link

    @property
    def outcome(self) -> str:
        if self.received:
            return ANSWERED
        if self.icmp_errors:
            return REFUSED
        if self.send_errors and self.sent == 0:
            return UNSENDABLE
        return LOST

    @property
    def loss(self) -> float | None:
        """Fraction of the requests sent that drew no answer; None when nothing was sent (not a 0 % loss)."""
        return None if self.sent == 0 else 1.0 - self.received / self.sent


@dataclass
class _Waiting:
    target: TargetRound
    sent_at: float


class _Channel:
    """One ICMP socket (icmplib) of one address family, and the requests of the current round waiting on it."""

    def __init__(self, version: int, privileged: bool) -> None:
        self.version = version
        self.icmp = (ICMPv4Socket if version == 4 else ICMPv6Socket)(privileged=privileged)
        self.icmp.blocking = False
        self.icmp._set_ttl(64)
        self.sock: socket.socket = self.icmp.sock
        self.privileged = self.icmp.is_privileged
        self.ident = random.randrange(1, 0xFFFF)  # a datagram socket's kernel replaces it with its own
        self.counter = random.randrange(0, 0xFFFF)
        self.kernel_ident: int | None = None
        self.waiting: dict[tuple[int, int], _Waiting] = {}
        self.idle: asyncio.Event | None = None  # set when nothing is waiting any more (made in each round's loop)
        self.reply_timeout = 1.0
        self.local: set[str] | None = None
        self.echo_reply = 0 if version == 4 else 129
        self.error_types = V4_ERRORS if version == 4 else V6_ERRORS
        self.stamped = False  # replies carry the kernel's arrival time
        for opt in ("SO_RCVBUFFORCE", "SO_RCVBUF"):  # FORCE passes rmem_max with CAP_NET_ADMIN
            with contextlib.suppress(OSError, AttributeError):
                self.sock.setsockopt(socket.SOL_SOCKET, getattr(socket, opt), RCVBUF)
                break
        if sys.platform != "linux":
            return
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self.stamped = bool(STAMP_SPACE)
        if self.privileged:  # the kernel hands this socket only echo replies and errors, not every ICMP packet
            keep = [self.echo_reply, *self.error_types]
            if version == 4:
                blocked = 0xFFFFFFFF & ~sum(1 << t for t in keep)
                self.sock.setsockopt(SOL_RAW, ICMP_FILTER, struct.pack("I", blocked))
            else:
                words = [0xFFFFFFFF] * 8
                for t in keep:
                    words[t >> 5] &= ~(1 << (t & 31))
                self.sock.setsockopt(socket.IPPROTO_ICMPV6, ICMP6_FILTER, struct.pack("8I", *words))
        else:  # without it a datagram socket never hears of ICMP errors
            level = socket.IPPROTO_IP if version == 4 else socket.IPPROTO_IPV6
            self.sock.setsockopt(level, IP_RECVERR if version == 4 else IPV6_RECVERR, 1)

    def close(self) -> None:
        self.icmp.close()

    # -- sending -----------------------------------------------------------------------------------
    def send(self, target: TargetRound) -> None:
        # icmplib builds the packet; the socket sends it to an address resolved once a round (icmplib's
        # own send() resolves and sets TTL and traffic class again for every request: most of its cost).
        assert target.sockaddr is not None
        self.counter = (self.counter + 1) & 0xFFFFFFFF
        ident, sequence = (self.ident + (self.counter >> 16)) & 0xFFFF, self.counter & 0xFFFF
        packet = self.icmp._create_packet(ident, sequence, PAYLOAD)
        for _ in range(3):
            # A datagram socket reports an earlier ICMP error (another target's) on its next send, once:
            # trying again tells that from a send that really cannot go.
            try:
                sent_at = time.monotonic()
                self.sock.sendto(packet, target.sockaddr)
            except OSError as exc:
                error = exc
                continue
            target.sent += 1
            if not self.privileged:  # the kernel put its own identifier (the socket's port) in the request
                if self.kernel_ident is None:
                    self.kernel_ident = self.sock.getsockname()[1]
                ident = self.kernel_ident
            self.waiting[(ident, sequence)] = _Waiting(target, sent_at)
            return
        target.send_errors[oserror_text(error)] += 1

    # -- receiving -----------------------------------------------------------------------------------
    def drain(self) -> None:
        """Read everything waiting on the socket (a reader callback: bounded, never blocks)."""
        now = time.monotonic
        for _ in range(4096):
            try:
                if self.stamped:
                    data, ancillary, _, addr = self.sock.recvmsg(2048, STAMP_SPACE)
                else:
                    data, addr = self.sock.recvfrom(2048)
                    ancillary = []
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError as exc:  # a pending ICMP error surfacing once; the error itself is read as a packet
                if exc.errno in (errno.EBADF, errno.ENOTSOCK):
                    break
                continue
            self.match(data, addr[0], _arrival(ancillary, now()))
        if not self.privileged and sys.platform == "linux":
            self.drain_errors()

    def match(self, data: bytes, source: str | None, at: float) -> None:
        """One packet read from the socket (`source` None where the loop cannot say who sent it)."""
        reply = self.icmp._parse_reply(data, source, at)
        if reply is None:
            return
        waiting = self.waiting.get((reply.id, reply.sequence))
        if waiting is None:
            return
        target = waiting.target
        if reply.type == self.echo_reply:
            if (source is not None and source.split("%")[0] != target.ip) or at - waiting.sent_at > self.reply_timeout:
                return  # someone else's answer, or too late to count
            self._done((reply.id, reply.sequence))
            target.received += 1
            target.rtts_ms.append((at - waiting.sent_at) * 1000)
            return
        if reply.type not in self.error_types or not self._quotes_icmp(data):
            return
        self._done((reply.id, reply.sequence))
        self._refused(target, reply.type, reply.code, source or "?")

    def _done(self, key: tuple[int, int]) -> None:
        del self.waiting[key]
        if not self.waiting and self.idle is not None:
            self.idle.set()

    def _quotes_icmp(self, data: bytes) -> bool:
        """An error message quotes the offending packet: it must have been ICMP (ours), not UDP or TCP."""
        if not self.privileged:
            return True  # the kernel delivered it to this ICMP socket
        if self.version == 4:
            return len(data) > 37 and data[37] == socket.IPPROTO_ICMP  # outer IPv4 20 + ICMP 8 + protocol at 9
        return len(data) > 14 and data[14] == socket.IPPROTO_ICMPV6  # ICMPv6 8 + next header at 6

    def _refused(self, target: TargetRound, icmp_type: int, code: int, source: str) -> None:
        source = source.split("%")[0]
        if self.local is None:
            self.local = _local_addresses()
        if source in self.local:  # our own stack: the target did not answer ARP/neighbour discovery
            target.neighbour_silent += 1
            return
        target.icmp_errors[f"{icmp_error_name(self.version, icmp_type, code)} from {source}"] += 1

    def drain_errors(self) -> None:
        """ICMP errors a datagram socket queued (IP_RECVERR): the quoted request names which one it was."""
        level, kind = (socket.IPPROTO_IP, IP_RECVERR) if self.version == 4 else (socket.IPPROTO_IPV6, IPV6_RECVERR)
        for _ in range(4096):
            try:
                data, ancillary, _, _ = self.sock.recvmsg(512, 512, socket.MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            if len(data) < 8:
                continue
            key = struct.unpack_from("!HH", data, 4)
            waiting = self.waiting.get(key)
            for cmsg_level, cmsg_type, cmsg in ancillary:
                if waiting is None or (cmsg_level, cmsg_type) != (level, kind) or len(cmsg) < 16:
                    continue
                err, origin, icmp_type, code = struct.unpack_from("=IBBB", cmsg)
                self._done(key)
                if origin in (SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6):
                    self._refused(waiting.target, icmp_type, code, _offender(cmsg, self.version))
                else:  # a local error the kernel queued instead of failing the send
                    waiting.target.sent -= 1
                    waiting.target.send_errors[oserror_text(OSError(err, errno.errorcode.get(err, "")))] += 1
                break

    def expire(self) -> None:
        """The round is over: what is still waiting was lost, unless its reply is already in the socket (a
        busy machine may not have let the reader run); the arrival time decides whether it was in time."""
        if self.waiting:
            self.drain()
        self.waiting.clear()
        self.local = self.idle = None

    def flush(self) -> None:
        """Drop what arrived between rounds (other programs' replies, late answers)."""
        self.waiting.clear()
        self.drain()


def _arrival(ancillary: list[tuple[int, int, bytes]], read_at: float) -> float:
    """When the packet reached the host, on the monotonic clock (the kernel stamps it in wall-clock time)."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= TIMESPEC.size:
            sec, nsec = TIMESPEC.unpack_from(data)
            return read_at - min(max(0.0, time.time() - (sec + nsec / 1e9)), 60.0)
    return read_at


def _offender(cmsg: bytes, version: int) -> str:
    # struct sock_extended_err (16 bytes), then the sockaddr of the node that sent the ICMP error
    try:
        if version == 4:
            return socket.inet_ntop(socket.AF_INET, cmsg[20:24])
        return socket.inet_ntop(socket.AF_INET6, cmsg[24:40])
    except (ValueError, OSError):
        return "?"


def _local_addresses() -> set[str]:
    try:
        return {a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs}
    except (OSError, RuntimeError):
        return set()


class Pinger:
    """Keeps one socket per address family for the agent's life; `round()` pings every target once."""

    def __init__(self, privileged: bool) -> None:
        self.privileged = privileged
        self._channels: dict[int, _Channel | OSError] = {}

    def channel(self, version: int) -> _Channel | OSError:
        ch = self._channels.get(version)
        if ch is None or (isinstance(ch, _Channel) and ch.icmp.is_closed):
            try:
                ch = _Channel(version, self.privileged)
            except SocketPermissionError:
                raise
            except (ICMPLibError, OSError) as exc:  # e.g. IPv6 disabled on this host: its targets cannot be sent to
                ch = OSError(getattr(exc.__context__, "errno", None) or errno.EAFNOSUPPORT, str(exc))
            self._channels[version] = ch
        return ch

    def close(self) -> None:
        for ch in self._channels.values():
            if isinstance(ch, _Channel):
                ch.close()
        self._channels.clear()

    async def round(
        self,
        addresses: list[str],
        count: int,
        packet_interval: float,
        reply_timeout: float,
        rate: float,
    ) -> list[TargetRound]:
        """Ping every address `count` times; results in the same order."""
        targets = [TargetRound(a) for a in addresses]
        await _resolve(targets)
        loop = asyncio.get_running_loop()
        by_version: dict[int, list[TargetRound]] = {}
        for t in targets:
            if t.sockaddr is not None:
                by_version.setdefault(6 if ":" in str(t.sockaddr[0]) else 4, []).append(t)
        channels: list[_Channel] = []
        for version, group in by_version.items():
            ch = self.channel(version)
            if isinstance(ch, OSError):
                for t in group:
                    t.send_errors[oserror_text(ch)] += 1
                continue
            ch.reply_timeout = reply_timeout
            channels.append(ch)
        readers = [_Reader(loop, ch) for ch in channels]
        try:
            for ch in channels:
                ch.flush()
            for r in readers:
                r.start()
            sendable = [(ch, t) for ch in channels for t in by_version[ch.version]]
            last = await _paced_sends(sendable, count, packet_interval, rate)
            deadline = last + reply_timeout
            for ch in channels:  # until every request is answered or refused, or the last one's reply is due
                ch.idle = idle = asyncio.Event()
                if ch.waiting and (left := deadline - time.monotonic()) > 0:
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(idle.wait(), left)
        finally:
            for r in readers:
                r.stop()
            for ch in channels:
                ch.expire()
        return targets


async def _paced_sends(sendable: list[tuple[_Channel, TargetRound]], count: int, interval: float, rate: float) -> float:
    """Send `count` sweeps over every target, each sweep at most `rate` a second; the time of the last send."""
    start = last = time.monotonic()
    n = len(sendable)
    for k in range(count):
        sweep = max(start + k * interval, time.monotonic())
        if (wait := sweep - time.monotonic()) > 0:
            await asyncio.sleep(wait)
            sweep = time.monotonic()
        i = 0
        while i < n:
            allowed = min(n, max(i + 1, int((time.monotonic() - sweep + TICK) * rate)))
            for ch, t in sendable[i:allowed]:
                ch.send(t)
            i = allowed
            last = time.monotonic()
            if i < n:
                await asyncio.sleep(max(TICK, sweep + i / rate - last))
    return last


async def _resolve(targets: list[TargetRound]) -> None:
    """Each target's socket address; host names and scoped IPv6 through the resolver (one that does not
    resolve cannot be sent to)."""
    loop = asyncio.get_running_loop()
    lookups = []
    for t in targets:
        try:
            t.ip = str(ipaddress.ip_address(t.address))
        except ValueError:
            lookups.append(t)
            continue
        if "%" in t.ip:
            lookups.append(t)
        else:
            t.sockaddr = (t.ip, 0) if ":" not in t.ip else (t.ip, 0, 0, 0)

    async def one(t: TargetRound) -> None:
        try:
            info = await loop.getaddrinfo(t.address, None, type=socket.SOCK_RAW)
        except OSError as exc:
            t.ip = None
            t.send_errors[f"cannot resolve {t.address}: {exc}"] += 1
            return
        t.sockaddr = info[0][4]
        t.ip = str(t.sockaddr[0]).split("%")[0]

    if lookups:
        await asyncio.gather(*(one(t) for t in lookups))


class _Reader:
    """The socket's reader in the running loop: a callback where the loop has one, a task otherwise (Windows)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, ch: _Channel) -> None:
        self.loop, self.ch = loop, ch
        self.task: asyncio.Task[None] | None = None
        self.registered = False

    def start(self) -> None:
        try:
            self.loop.add_reader(self.ch.sock.fileno(), self.ch.drain)
            self.registered = True
        except NotImplementedError:
            self.task = self.loop.create_task(self._receive())

    async def _receive(self) -> None:
        recvfrom = getattr(self.loop, "sock_recvfrom", None)  # Python 3.11+
        while True:
            try:
                if recvfrom is not None:
                    data, addr = await recvfrom(self.ch.sock, 2048)
                    source: str | None = addr[0]
                else:
                    data, source = await self.loop.sock_recv(self.ch.sock, 2048), None
            except OSError:  # a pending error surfacing once; never a busy loop
                await asyncio.sleep(0.01)
                continue
            self.ch.match(data, source, time.monotonic())

    def stop(self) -> None:
        if self.registered:
            self.loop.remove_reader(self.ch.sock.fileno())
            self.registered = False
        if self.task:
            self.task.cancel()
            self.task = None
