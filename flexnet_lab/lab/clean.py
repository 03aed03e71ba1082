"""Find and remove what carries the lab's tag, and nothing else.

Works from the tags alone (see runstate), so it also cleans up after a lab process that was
SIGKILLed and had no chance to run its own teardown.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field

from .runstate import (ALIAS_PREFIX, BASE, ENV_TAG, NETNS_PREFIX, bpffs_dir, bpffs_lock,
                       pid_alive,
                       proc_starttime, runs_dir)


@dataclass
class Found:
    """Tagged objects on the machine, by kind."""
    processes: list[tuple[int, str]] = field(default_factory=list)   # (pid, run)
    namespaces: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)                   # root-namespace ifnames
    pin_dirs: list[str] = field(default_factory=list)
    run_dirs: list[str] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.processes or self.namespaces or self.links or self.pin_dirs
                    or self.run_dirs)

    def summary(self) -> dict:
        return {"processes": len(self.processes), "namespaces": len(self.namespaces),
                "links": len(self.links), "pins": len(self.pin_dirs),
                "run_dirs": len(self.run_dirs)}


def _matches(run: str, only: str | None) -> bool:
    return only is None or run == only


def find_tagged(base: str = BASE, run: str | None = None) -> Found:
    found = Found()
    me = os.getpid()
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
        except OSError:
            continue
        tag = next((e.split(b"=", 1)[1].decode() for e in env
                    if e.startswith(ENV_TAG.encode() + b"=")), None)
        if tag and pid != me and _matches(tag, run):
            found.processes.append((pid, tag))
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(NETNS_PREFIX) and _matches(name[len(NETNS_PREFIX):].split("-")[0], run):
            found.namespaces.append(name)
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True).stdout
    for link in json.loads(out or "[]"):
        alias = link.get("ifalias", "")
        if alias.startswith(ALIAS_PREFIX) and _matches(alias[len(ALIAS_PREFIX):], run):
            found.links.append(link["ifname"])
    for root, bucket in ((bpffs_dir(base), found.pin_dirs), (runs_dir(base), found.run_dirs)):
        if os.path.isdir(root):
            bucket += [os.path.join(root, d) for d in sorted(os.listdir(root))
                       if os.path.isdir(os.path.join(root, d)) and _matches(d, run)]
    return found


def clean(base: str = BASE, run: str | None = None) -> Found:
    """Remove every tagged object (of one run, or of all). Returns what was removed."""
    found = find_tagged(base, run)
    _stop_labs(base, run)
    for pid, _ in found.processes:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    remove_namespaces(found.namespaces)
    for ifname in found.links:
        subprocess.run(["ip", "link", "del", ifname], capture_output=True)
    for d in found.pin_dirs + found.run_dirs:
        shutil.rmtree(d, ignore_errors=True)
    release_bpffs(base)
    return found


def remove_namespace(ns: str) -> None:
    """Kill whatever still runs in a lab namespace (also untagged stragglers started in it
    by hand), then delete the namespace; its veths go with it."""
    remove_namespaces([ns])


def remove_namespaces(names: list[str]) -> None:
    """remove_namespace for many at once: one walk of /proc finds the processes in any of
    them, one `ip -batch` deletes them all (a big lab has hundreds)."""
    inodes = set()
    for ns in names:
        try:
            st = os.stat(f"/run/netns/{ns}")
            inodes.add((st.st_dev, st.st_ino))
        except OSError:
            pass
    if not inodes:
        return
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            st = os.stat(f"/proc/{pid}/ns/net")
        except OSError:
            continue
        if (st.st_dev, st.st_ino) in inodes and pid != os.getpid():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    # -force: go on past a name already gone (a concurrent clean)
    subprocess.run(["ip", "-force", "-batch", "-"], capture_output=True, text=True,
                   input="".join(f"netns del {ns}\n" for ns in names))


def _stop_labs(base: str, run: str | None) -> None:
    """SIGKILL lab processes recorded in run folders (they are not in a lab namespace)."""
    root = runs_dir(base)
    for d in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        if not _matches(d, run):
            continue
        try:
            with open(os.path.join(root, d, "state.json")) as fh:
                state = json.load(fh)
            pid = int(state.get("pid", 0))
        except (OSError, ValueError):
            continue
        if (pid and pid != os.getpid() and pid_alive(pid)
                and proc_starttime(pid) == state.get("pid_start")):
            os.kill(pid, signal.SIGKILL)
            for _ in range(50):
                if not pid_alive(pid):
                    break
                time.sleep(0.02)


def release_bpffs(base: str = BASE) -> None:
    """Unmount the lab's bpffs once no run uses it (a run claims its folder under the same
    lock it mounts with)."""
    path = bpffs_dir(base)
    with bpffs_lock(base):
        if os.path.isdir(path) and not any(os.path.isdir(os.path.join(path, d))
                                           for d in os.listdir(path)):
            subprocess.run(["umount", path], capture_output=True)
