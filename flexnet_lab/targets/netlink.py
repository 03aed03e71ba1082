"""Netlink access to one network namespace (pyroute2), opened once and reused."""
from __future__ import annotations

import ctypes
import os
import subprocess
import threading

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

    def ifindex(self, ifname: str) -> int:
        found = self.ipr().link_lookup(ifname=ifname)
        if not found:
            raise TargetError(self.path or "root namespace", f"no interface {ifname}")
        return found[0]

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
