"""A Linux bridge switch: the baseline the eBPF switch is measured against.

Learning and all flooding (unknown unicast, multicast, broadcast) are off and forwarding
entries are static, so the bridges follow exactly the routes the eBPF switches use and a
looped topology cannot storm. Without broadcast, ARP cannot resolve: the lab gives hosts
static neighbour entries when it runs bridges."""
from __future__ import annotations

import subprocess

from ..errors import TargetError


class BridgeSwitch:
    kind = "bridge"

    def __init__(self, name: str, node, ports: dict[int, tuple[str, bool]]):
        self.name, self.node, self.ports = name, node, ports

    def boot(self) -> None:
        cmds = ["ip link add flxbr0 type bridge", "ip link set flxbr0 up"]
        for ifname, _ in self.ports.values():
            cmds += [f"ip link set dev {ifname} master flxbr0",
                     f"bridge link set dev {ifname} learning off flood off mcast_flood off "
                     "bcast_flood off"]
        self.node.cmd("; ".join(cmds))

    def add_route(self, mac: str, port: int) -> None:
        self.add_routes([(mac, port)])

    def add_routes(self, routes: list[tuple[str, int]]) -> None:
        """Static forwarding entries (mac, port), all in one `bridge -batch` process."""
        lines = "".join(f"fdb replace {mac} dev {self.ports[port][0]} master static\n"
                        for mac, port in routes)
        proc = self.node.popen(["bridge", "-batch", "-"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _, err = proc.communicate(lines, timeout=60)
        if proc.returncode != 0:
            raise TargetError(self.name, f"bridge fdb: {err.strip()[:200]}")

    def descriptor(self) -> dict:
        return {}

    def release(self) -> None:
        pass  # nothing held: the bridge lives in the kernel

    def close(self) -> None:
        pass  # the bridge dies with the switch's namespace
