"""Netlink access to one network namespace (pyroute2), opened once and reused."""
from __future__ import annotations

from pyroute2 import IPRoute

from ..errors import TargetError


class Netns:
    """A namespace by path (/run/netns/NAME or /proc/PID/ns/net); None = the caller's own."""

    def __init__(self, path: str | None):
        self.path = path
        self._ipr: IPRoute | None = None

    def ipr(self) -> IPRoute:
        if self._ipr is None:
            # pyroute2 opens the socket inside the namespace and hands it back to us
            self._ipr = IPRoute(netns=self.path) if self.path else IPRoute()
        return self._ipr

    def ifindex(self, ifname: str) -> int:
        found = self.ipr().link_lookup(ifname=ifname)
        if not found:
            raise TargetError(self.path or "root namespace", f"no interface {ifname}")
        return found[0]

    def close(self) -> None:
        if self._ipr is not None:
            try:
                self._ipr.close()
            except Exception:  # closing a socket of a namespace already gone
                pass
            self._ipr = None
