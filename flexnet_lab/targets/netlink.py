"""Netlink access to one network namespace (pyroute2), opened once and reused."""
from __future__ import annotations

import ctypes
import os
import socket
import struct
import subprocess
import threading
from dataclasses import dataclass

from pyroute2 import IPRoute

from ..errors import TargetError


_CLONE_NEWNET = 0x40000000


def _setns(libc, fd: int) -> None:
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def in_namespace(path: str, make):
    """Call `make()` with the calling thread inside the namespace at `path`: a socket it
    opens (netlink, TCP) stays bound to that namespace after the thread returns home.

    pyroute2's own netns= option forks a child for this, and a forked copy of a lab must
    never run the lab's teardown code."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    try:
        target = os.open(path, os.O_RDONLY)
        try:
            _setns(libc, target)
            try:
                return make()
            finally:
                _setns(libc, home)
        finally:
            os.close(target)
    finally:
        os.close(home)


def socket_in_namespace(path: str) -> IPRoute:
    """An IPRoute whose socket lives in the namespace at `path`."""
    return in_namespace(path, IPRoute)


class Netns:
    """A namespace by path (/run/netns/NAME or /proc/PID/ns/net); None = the caller's own."""

    def __init__(self, path: str | None):
        self.path = path
        self._iprs: dict[int, IPRoute] = {}
        self._lock = threading.Lock()
        # one raw socket, any thread: its requests and their acks must not interleave
        self._rtnl: Rtnl | None = None
        self._rtnl_lock = threading.Lock()
        self._indexes: dict[str, int] = {}

    def ipr(self) -> IPRoute:
        """This thread's netlink socket in the namespace. One per thread: pyroute2 0.9
        opens a socket per thread behind one IPRoute object, and one opened by another
        thread than the one that entered the namespace lands in the root namespace."""
        tid = threading.get_ident()
        with self._lock:
            ipr = self._iprs.get(tid)
        if ipr is None:
            ipr = socket_in_namespace(self.path) if self.path else IPRoute()
            with self._lock:
                self._iprs[tid] = ipr
        return ipr

    def _raw(self) -> "Rtnl":
        # caller holds _rtnl_lock
        if self._rtnl is None:
            self._rtnl = in_namespace(self.path, Rtnl) if self.path else Rtnl()
        return self._rtnl

    def ifindex(self, ifname: str) -> int:
        # names are looked up in one dump of all links, read again on a miss (a lab's
        # interfaces keep their names and indexes while it runs)
        with self._rtnl_lock:
            if ifname not in self._indexes:
                self._indexes = self._raw().links()
            index = self._indexes.get(ifname)
        if index is None:
            raise TargetError(self.path or "root namespace", f"no interface {ifname}")
        return index

    def request(self, requests: list["Request"]) -> None:
        """Apply rtnetlink requests in batches (see Rtnl.run), from any thread."""
        try:
            with self._rtnl_lock:
                self._raw().run(requests)
        except TargetError as exc:
            raise TargetError(self.path or "root namespace", exc.message) from None

    def ifname(self, ifindex: int) -> str:
        link = self.ipr().get_links(ifindex)[0]
        return link.get_attr("IFLA_IFNAME")

    def run(self, cmd: list[str], timeout: float = 10) -> str:
        """Run a command inside the namespace; raises TargetError when it fails."""
        full = (["nsenter", f"--net={self.path}"] if self.path else []) + cmd
        try:
            res = subprocess.run(full, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise TargetError(self.path or "root namespace", f"{' '.join(cmd)}: timed out") from exc
        if res.returncode != 0:
            raise TargetError(self.path or "root namespace",
                              f"{' '.join(cmd)}: {res.stderr.strip() or res.returncode}")
        return res.stdout

    def close(self) -> None:
        with self._rtnl_lock:
            if self._rtnl is not None:
                self._rtnl.close()
                self._rtnl = None
        with self._lock:
            iprs, self._iprs = list(self._iprs.values()), {}
        for ipr in iprs:
            try:
                ipr.close()
            except Exception:  # closing a socket of a namespace already gone
                pass


class NamespaceNode:
    """Starts processes inside a namespace (nsenter), tagged like a lab node's: what a
    controller in another process uses where the lab uses its Mininet node."""

    def __init__(self, netns_path: str, env: dict[str, str]):
        self.netns_path = netns_path
        self.env = env

    def popen(self, args: list[str], **kw) -> subprocess.Popen:
        kw.setdefault("env", self.env)
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(["nsenter", f"--net={self.netns_path}", *args], **kw)


# --- raw rtnetlink: many requests per system call ---------------------------------------------
# pyroute2 costs 1-2 ms per request (an asyncio loop per call); a lab of 200 nodes makes
# thousands of them at bring-up. These few messages are packed by hand and sent in batches,
# every one acknowledged, so a batch costs about one round trip.

_NLM_F_REQUEST, _NLM_F_ACK, _NLM_F_EXCL, _NLM_F_CREATE, _NLM_F_DUMP = 1, 4, 0x200, 0x400, 0x300
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_RTM_NEWLINK, _RTM_GETLINK, _RTM_NEWADDR = 16, 18, 20
_RTM_NEWQDISC, _RTM_NEWTFILTER = 36, 44
_RTM_NEWNEIGH, _NDA_DST, _NDA_LLADDR, _NUD_PERMANENT, _NLM_F_REPLACE = 28, 1, 2, 0x80, 0x100
_IFLA_ADDRESS, _IFLA_IFNAME, _IFLA_IFALIAS = 1, 3, 20
_IFA_ADDRESS, _IFA_LOCAL = 1, 2
_TCA_KIND, _TCA_OPTIONS = 1, 2
_TCA_BPF_CLASSID, _TCA_BPF_FD, _TCA_BPF_NAME, _TCA_BPF_FLAGS = 3, 6, 7, 8
_TCA_BPF_FLAG_ACT_DIRECT = 1
_IFF_UP = 1
_TC_H_CLSACT = 0xFFFFFFF1
_ETH_P_ALL = 0x0003
_EEXIST = 17
_BATCH = 1024  # requests per send: even all of them failing, the errors fit the receive buffer


def _attr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def _cstr(text: str) -> bytes:
    return text.encode() + b"\0"


@dataclass(frozen=True)
class Request:
    """One rtnetlink request: message type, flags, body; `what` names it in errors;
    errors listed in `ok` (negative errno) count as success."""
    type: int
    flags: int
    body: bytes
    what: str
    ok: tuple[int, ...] = ()


def set_link(index: int, up: bool | None = None, alias: str | None = None,
             mac: str | None = None, what: str = "") -> Request:
    """Change an existing link: administrative state, alias, MAC."""
    flags = _IFF_UP if up else 0
    change = _IFF_UP if up is not None else 0
    body = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, flags, change)
    if alias is not None:
        body += _attr(_IFLA_IFALIAS, alias.encode())
    if mac is not None:
        body += _attr(_IFLA_ADDRESS, bytes.fromhex(mac.replace(":", "")))
    return Request(_RTM_NEWLINK, 0, body, what or f"set link {index}")


def add_address(index: int, ip: str, prefixlen: int, what: str = "") -> Request:
    """Add an IPv4 address to a link."""
    raw = socket.inet_aton(ip)
    body = struct.pack("=BBBBI", socket.AF_INET, prefixlen, 0, 0, index)
    body += _attr(_IFA_LOCAL, raw) + _attr(_IFA_ADDRESS, raw)
    return Request(_RTM_NEWADDR, _NLM_F_CREATE | _NLM_F_EXCL, body,
                   what or f"add {ip}/{prefixlen} to link {index}")


def add_clsact(index: int) -> Request:
    """The clsact qdisc (tc ingress/egress hooks); one that exists already is fine."""
    body = struct.pack("=BxxxiIII", socket.AF_UNSPEC, index, 0xFFFF0000, _TC_H_CLSACT, 0)
    body += _attr(_TCA_KIND, _cstr("clsact"))
    return Request(_RTM_NEWQDISC, _NLM_F_CREATE | _NLM_F_EXCL, body,
                   f"add clsact to link {index}", ok=(-_EEXIST,))


def add_bpf_filter(index: int, parent: int, prog_fd: int, name: str,
                   replace: bool = False) -> Request:
    """A direct-action cls_bpf filter running `prog_fd` (handle 1, all protocols); with
    `replace`, `tc filter replace` (creates it when it is gone)."""
    info = socket.htons(_ETH_P_ALL)
    body = struct.pack("=BxxxiIII", socket.AF_UNSPEC, index, 1, parent, info)
    opts = (_attr(_TCA_BPF_FD, struct.pack("=I", prog_fd)) + _attr(_TCA_BPF_NAME, _cstr(name))
            + _attr(_TCA_BPF_FLAGS, struct.pack("=I", _TCA_BPF_FLAG_ACT_DIRECT))
            + _attr(_TCA_BPF_CLASSID, struct.pack("=I", 1)))
    body += _attr(_TCA_KIND, _cstr("bpf")) + _attr(_TCA_OPTIONS, opts)
    flags = _NLM_F_CREATE | (_NLM_F_REPLACE if replace else _NLM_F_EXCL)
    return Request(_RTM_NEWTFILTER, flags, body, f"attach {name} to link {index}")


def add_neighbour(index: int, ip: str, mac: str) -> Request:
    """A permanent IPv4 neighbour (ARP) entry; replaces one that exists."""
    body = struct.pack("=BxxxiHBB", socket.AF_INET, index, _NUD_PERMANENT, 0, 0)
    body += _attr(_NDA_DST, socket.inet_aton(ip))
    body += _attr(_NDA_LLADDR, bytes.fromhex(mac.replace(":", "")))
    return Request(_RTM_NEWNEIGH, _NLM_F_CREATE | _NLM_F_REPLACE, body,
                   f"neighbour {ip} on link {index}")


class Rtnl:
    """A raw NETLINK_ROUTE socket (in the namespace of the thread that made it)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self.sock.close()

    def _frame(self, type_: int, flags: int, body: bytes) -> tuple[int, bytes]:
        self._seq += 1
        return self._seq, struct.pack("=IHHII", 16 + len(body), type_, flags, self._seq,
                                      0) + body

    def _messages(self):
        """Yield (type, seq, payload) of every message in the next datagram."""
        data = self.sock.recv(65536)  # the kernel sizes a dump's datagrams at most 32 KiB
        off = 0
        while off + 16 <= len(data):
            length, type_, _, seq, _ = struct.unpack_from("=IHHII", data, off)
            yield type_, seq, data[off + 16:off + length]
            off += (length + 3) & ~3

    def run(self, requests: list[Request]) -> None:
        """Send the requests in batches; raise TargetError naming the first that failed
        (the others of its batch have been applied: callers own whole namespaces, which
        are deleted on failure). Only a batch's last request asks for an ack: the kernel
        handles a batch in order within the send, reports every failure unasked, and
        the last ack arrives after all of them."""
        for start in range(0, len(requests), _BATCH):
            chunk = requests[start:start + _BATCH]
            pending, frames = {}, []
            for i, req in enumerate(chunk):
                ack = _NLM_F_ACK if i == len(chunk) - 1 else 0
                seq, frame = self._frame(req.type, _NLM_F_REQUEST | ack | req.flags, req.body)
                pending[seq] = req
                frames.append(frame)
            last = seq
            self.sock.sendall(b"".join(frames))
            failed, done = None, False
            while not done:
                for type_, seq, payload in self._messages():
                    if type_ != _NLMSG_ERROR or seq not in pending:
                        continue
                    req = pending[seq]
                    err = struct.unpack_from("=i", payload)[0]
                    if err and err not in req.ok and failed is None:
                        failed = (req, -err)
                    done = done or seq == last
            if failed:
                req, errno_ = failed
                raise TargetError("netlink", f"{req.what}: {os.strerror(errno_)}")

    def links(self) -> dict[str, int]:
        """Interface name -> ifindex of every link in the namespace (one dump)."""
        seq, frame = self._frame(_RTM_GETLINK, _NLM_F_REQUEST | _NLM_F_DUMP,
                                 struct.pack("=BxHiII", socket.AF_UNSPEC, 0, 0, 0, 0))
        self.sock.sendall(frame)
        out: dict[str, int] = {}
        while True:
            for type_, mseq, payload in self._messages():
                if mseq != seq:
                    continue
                if type_ == _NLMSG_DONE:
                    return out
                if type_ == _NLMSG_ERROR:
                    err = struct.unpack_from("=i", payload)[0]
                    raise TargetError("netlink", f"link dump: {os.strerror(-err)}")
                if type_ != _RTM_NEWLINK:
                    continue
                index = struct.unpack_from("=BxHiII", payload)[2]
                off = 16
                while off + 4 <= len(payload):
                    alen, akind = struct.unpack_from("=HH", payload, off)
                    if alen < 4:
                        break
                    if akind == _IFLA_IFNAME:
                        out[payload[off + 4:off + alen].rstrip(b"\0").decode()] = index
                        break
                    off += (alen + 3) & ~3
