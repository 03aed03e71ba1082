"""Per-port packet capture: one tcpdump per switch port, each writing a pcap file in the
run folder (RUN_DIR/pcap/SWITCH-pPORT.pcap), copied under results/ when the lab stops.

Where a port's frames are seen: the eBPF switch sends a frame out with bpf_redirect_peer,
straight into the ingress of the far end, so a capture on the switch's own interface sees
the frames the switch receives there but not those it sends. A port facing a host is
therefore captured on the host's end of the link (both directions are in the file); a
port between two switches on the switch's interface: the frames the switch receives on
it (the other direction is in the neighbour's file for its end of the link)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

from ..errors import EnvironmentMissing, LabError
from .fabric import Fabric


class PortCapture:
    """The captures of one run: started per switch port, stopped and kept together."""

    def __init__(self, fabric: Fabric, env: dict[str, str]):
        self.fabric = fabric
        self.env = env
        self.folder = os.path.join(fabric.run_dir, "pcap")
        self._procs: dict[str, subprocess.Popen] = {}

    def _where(self, switch: str, port: int) -> tuple[str, str]:
        """(namespace, interface) to capture switch port `port` on."""
        desc = self.fabric.switches[switch]
        host = next((h for h in self.fabric.hosts.values()
                     if h.switch == switch and h.port == port), None)
        if host is not None:
            return host.netns, host.intf
        return desc.netns, desc.ports[port][0]

    def start(self, switch: str, port: int | None = None) -> list[str]:
        """Capture every port of `switch` (or one); returns the pcap files. A port already
        captured keeps its capture."""
        if shutil.which("tcpdump") is None:
            raise EnvironmentMissing("tcpdump not found: install Debian's tcpdump "
                                     "(make setup)")
        desc = self.fabric.switches.get(switch)
        if desc is None:
            raise LabError(f"pcap: no switch {switch[:20]!r} (have "
                           f"{', '.join(sorted(self.fabric.switches))})")
        ports = sorted(int(p) for p in desc.ports)
        if port is not None and port not in ports:
            raise LabError(f"pcap: {switch} has no port {port} (ports "
                           f"{', '.join(map(str, ports))})")
        os.makedirs(self.folder, exist_ok=True)
        out = []
        for p in [port] if port is not None else ports:
            name = f"{switch}-p{p}"
            path = os.path.join(self.folder, f"{name}.pcap")
            out.append(path)
            if name in self._procs and self._procs[name].poll() is None:
                continue
            netns, intf = self._where(switch, p)
            # -U: each packet written as it comes (the file is readable while it runs);
            # -Z root: write the file as root (Debian's tcpdump drops to its own user)
            proc = subprocess.Popen(
                ["nsenter", f"--net={netns}", "tcpdump", "-i", intf, "-w", path, "-U",
                 "-n", "-s", "0", "-Z", "root", "--immediate-mode"],
                env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, start_new_session=True)
            self._procs[name] = proc
            self._wait_listening(proc, path, name)
        return out

    @staticmethod
    def _wait_listening(proc: subprocess.Popen, path: str, name: str) -> None:
        # tcpdump writes the file's header once it listens
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace").strip().splitlines()
                raise LabError(f"pcap {name}: tcpdump stopped: {(err or ['?'])[-1][:200]}")
            if os.path.exists(path) and os.path.getsize(path) >= 24:
                time.sleep(0.05)
                return
            time.sleep(0.02)
        raise LabError(f"pcap {name}: tcpdump did not start listening within 5 s")

    def running(self) -> dict[str, str]:
        return {n: os.path.join(self.folder, f"{n}.pcap") for n, p in self._procs.items()
                if p.poll() is None}

    def stop(self) -> None:
        """Stop every capture (tcpdump flushes its file on SIGTERM)."""
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self._procs.values():
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            if proc.stderr:
                proc.stderr.close()
        self._procs.clear()

    def keep(self, dest: str) -> list[str]:
        """Copy the run's pcap files to `dest` (kept after the run folder is removed)."""
        if not os.path.isdir(self.folder):
            return []
        files = sorted(f for f in os.listdir(self.folder) if f.endswith(".pcap"))
        if files:
            os.makedirs(dest, exist_ok=True)
        for f in files:
            shutil.copyfile(os.path.join(self.folder, f), os.path.join(dest, f))
        return [os.path.join(dest, f) for f in files]
