"""What the controller knows of the realised network: the run's folders, every switch
(kind, namespace, ports) and every host (namespace, interface, address). The lab writes it
to `<run>/fabric.json` once the network is up; a controller in another process opens its
device handles from it."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from ..errors import ControlError


@dataclass(frozen=True)
class SwitchDesc:
    name: str
    kind: str                              # ebpf | bmv2 | bridge
    netns: str                             # /run/netns/...
    ports: dict                            # port number -> [ifname, peer-mode]
    grpc: str = ""                         # bmv2: unix:<socket>
    pid: int = 0                           # bmv2: simple_switch_grpc's pid
    args: tuple = ()                       # bmv2: how it was started
    peers: dict = field(default_factory=dict)   # port number -> the node on its far end
    p4: dict = field(default_factory=dict)      # bmv2 running a user's program: UserP4 json


@dataclass(frozen=True)
class HostDesc:
    name: str
    netns: str
    intf: str
    ip: str
    mac: str
    switch: str                            # the switch it hangs off
    port: int                              # ... on that switch's port


@dataclass
class Fabric:
    run: str
    run_dir: str
    pin_dir: str
    topology: str                          # the topology's source file
    switches: dict[str, SwitchDesc] = field(default_factory=dict)
    hosts: dict[str, HostDesc] = field(default_factory=dict)
    routes: dict[str, list] = field(default_factory=dict)   # switch -> [[ip, plen, port]]

    @property
    def path(self) -> str:
        return os.path.join(self.run_dir, "fabric.json")

    def path_between(self, src: str, dst: str) -> list[str]:
        """The switches a packet from host `src` to host `dst` crosses, in order, by the
        lab's routes."""
        dst_ip = self.hosts[dst].ip
        at, seen = self.hosts[src].switch, []
        while at in self.switches and at not in seen and len(seen) < 64:
            seen.append(at)
            port = next((p for ip, _plen, p in self.routes.get(at, []) if ip == dst_ip), None)
            if port is None:
                break
            at = self.switches[at].peers.get(port)
        return seen

    def save(self) -> str:
        doc = {"run": self.run, "run_dir": self.run_dir, "pin_dir": self.pin_dir,
               "topology": self.topology, "routes": self.routes,
               "switches": {n: {**s.__dict__, "ports": {str(k): list(v) for k, v in s.ports.items()},
                                "peers": {str(k): v for k, v in s.peers.items()},
                                "args": list(s.args)} for n, s in self.switches.items()},
               "hosts": {n: h.__dict__ for n, h in self.hosts.items()}}
        tmp = self.path + ".tmp"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
            json.dump(doc, fh, indent=1)
        os.replace(tmp, self.path)
        return self.path

    @classmethod
    def load(cls, run_dir: str) -> "Fabric":
        path = os.path.join(run_dir, "fabric.json")
        try:
            with open(path) as fh:
                d = json.load(fh)
        except (OSError, ValueError) as exc:
            raise ControlError(f"{path}: cannot read the lab's fabric ({exc}); is the run up?") from exc
        sw = {n: SwitchDesc(**{**s, "ports": {int(k): tuple(v) for k, v in s["ports"].items()},
                                "args": tuple(s["args"]),
                                "peers": {int(k): v for k, v in s.get("peers", {}).items()}}) for n, s in d["switches"].items()}
        return cls(d["run"], d["run_dir"], d["pin_dir"], d["topology"], sw,
                   {n: HostDesc(**h) for n, h in d["hosts"].items()}, d.get("routes", {}))
