"""All-pairs reachability: every host sends ICMP echo requests to every other host.

The requests are real packets leaving each host's own namespace; they are sent from this
process through one raw ICMP socket per host (a socket made inside a namespace stays bound
to it), not by a `ping` process per pair. A lab of 250 hosts has 62,250 pairs: a process per
pair loaded 2 cores so much (load ~45) that a fixed 1 s timeout called reachable pairs
lost. Here the probes are paced (a bounded number in flight, every destination probed once
per round), a pair whose probe goes unanswered is probed again with a longer wait before it
is called unreachable, and the unreachable pairs are reported by name.
"""
from __future__ import annotations

import os
import select
import socket
import struct
import time
from dataclasses import dataclass, field

from ..targets.netlink import in_namespace

_ICMP_ECHO_REPLY, _ICMP_ECHO = 0, 8
_SOL_RAW, _ICMP_FILTER = 255, 1
_PAYLOAD = b"flexnet-pingall!"  # 16 bytes: the reply must carry it back


@dataclass
class PingResult:
    """Outcome of an all-pairs check (see as_dict for the keys callers read)."""
    pairs: int = 0
    received: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    retried: list[tuple[str, str]] = field(default_factory=list)  # answered on a retry
    probes: int = 0
    elapsed_s: float = 0.0

    def as_dict(self) -> dict:
        loss = 100.0 * (self.pairs - self.received) / self.pairs if self.pairs else 100.0
        return {"sent": self.pairs, "received": self.received, "loss_pct": loss,
                "failed": self.failed, "retried": len(self.retried),
                "retried_pairs": self.retried, "probes": self.probes,
                "elapsed_s": round(self.elapsed_s, 2)}


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def _echo(ident: int, seq: int) -> bytes:
    head = struct.pack("!BBHHH", _ICMP_ECHO, 0, 0, ident, seq)
    csum = _checksum(head + _PAYLOAD)
    return struct.pack("!BBHHH", _ICMP_ECHO, 0, csum, ident, seq) + _PAYLOAD


def _raw_icmp_socket(netns_path: str) -> socket.socket:
    def make():
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        # the kernel filters: only echo replies reach this socket
        s.setsockopt(_SOL_RAW, _ICMP_FILTER,
                     struct.pack("I", ~(1 << _ICMP_ECHO_REPLY) & 0xFFFFFFFF))
        s.setblocking(False)
        return s
    return in_namespace(netns_path, make)


def ping_all(hosts: list[tuple[str, str, str]], timeout_s: float = 1.0, retries: int = 2,
             window: int = 256, progress=None) -> PingResult:
    """hosts: (name, ip, netns path). Each ordered pair (a, b), a != b, is answered when
    an echo reply from b reaches a. An unanswered probe is sent again up to `retries`
    times, each time waiting twice as long; `window` bounds probes in flight."""
    t0 = time.monotonic()
    n = len(hosts)
    result = PingResult(pairs=n * (n - 1))
    if n < 2:
        result.elapsed_s = time.monotonic() - t0
        return result
    base = int.from_bytes(os.urandom(2), "big")  # tells our replies from anyone else's
    ident = [(base + i) & 0xFFFF for i in range(n)]
    by_ident = {ident[i]: i for i in range(n)}
    ip_index = {ip: j for j, (_, ip, _) in enumerate(hosts)}
    socks: list[socket.socket] = []
    try:
        for _, _, path in hosts:
            socks.append(_raw_icmp_socket(path))
        poller = select.epoll()
        fd_src = {}
        for i, s in enumerate(socks):
            poller.register(s.fileno(), select.EPOLLIN)
            fd_src[s.fileno()] = i
        # round r: host i probes host (i + r) mod n; every host is probed once per round
        queue = [(i, (i + r) % n) for r in range(1, n) for i in range(n)]
        queue.reverse()  # pop() from the end keeps the round order
        attempts: dict[tuple[int, int], int] = {}
        inflight: dict[tuple[int, int], float] = {}  # pair -> deadline
        retry: list[tuple[int, int]] = []
        answered: set[tuple[int, int]] = set()
        gave_up: set[tuple[int, int]] = set()  # a reply arriving later does not count
        while queue or retry or inflight:
            now = time.monotonic()
            # send, retries first, while the window has room
            while len(inflight) < window and (retry or queue):
                pair = retry.pop() if retry else queue.pop()
                a, b = pair
                tries = attempts.get(pair, 0)
                attempts[pair] = tries + 1
                try:
                    socks[a].sendto(_echo(ident[a], b), (hosts[b][1], 0))
                except (BlockingIOError, OSError):
                    pass  # counts as a lost probe: it times out and is retried
                result.probes += 1
                inflight[pair] = now + timeout_s * (2 ** tries)
            for fd, _ in poller.poll(0.01):
                a = fd_src[fd]
                while True:
                    try:
                        data, (src_ip, _) = socks[a].recvfrom(256)
                    except (BlockingIOError, InterruptedError):
                        break
                    ihl = (data[0] & 0x0F) * 4
                    if len(data) < ihl + 8:
                        continue
                    kind, _, _, rid, seq = struct.unpack_from("!BBHHH", data, ihl)
                    if kind != _ICMP_ECHO_REPLY or by_ident.get(rid) != a:
                        continue
                    b = ip_index.get(src_ip)
                    pair = (a, b)
                    if b != seq or pair in answered or pair in gave_up:
                        continue
                    answered.add(pair)
                    inflight.pop(pair, None)
                    if attempts.get(pair, 1) > 1:
                        result.retried.append((hosts[a][0], hosts[b][0]))
                    if progress:
                        progress.advance()
            now = time.monotonic()
            for pair, deadline in list(inflight.items()):
                if deadline <= now:
                    del inflight[pair]
                    if attempts[pair] <= retries:
                        retry.append(pair)
                    else:
                        gave_up.add(pair)
                        result.failed.append((hosts[pair[0]][0], hosts[pair[1]][0]))
                        if progress:
                            progress.advance()
        poller.close()
    finally:
        for s in socks:
            s.close()
    result.received = len(answered)
    result.failed.sort()
    result.elapsed_s = time.monotonic() - t0
    return result
