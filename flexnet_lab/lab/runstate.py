"""The run tag and where a run keeps its state.

Everything a run creates carries its tag so `flexnet clean` can find it after any exit:
  namespaces   /run/netns/flexnet-<run>-<node>      (named, so they are listable)
  interfaces   alias "flexnet:<run>"                 (travels with the interface)
  processes    environment FLEXNET_RUN=<run>         (inherited by everything a node runs)
  bpffs pins   <bpffs>/<run>/...                     (the lab's own bpffs mount)
  run folder   /run/flexnet/runs/<run>/state.json, logs
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import subprocess
from dataclasses import dataclass

BASE = "/run/flexnet"
NETNS_PREFIX = "flexnet-"
ALIAS_PREFIX = "flexnet:"
ENV_TAG = "FLEXNET_RUN"


def runs_dir(base: str = BASE) -> str:
    return os.path.join(base, "runs")


def bpffs_dir(base: str = BASE) -> str:
    return os.path.join(base, "bpffs")


@dataclass(frozen=True)
class RunTag:
    """A run's identity: 6 hex digits, unique on the machine."""
    run: str
    base: str = BASE

    @classmethod
    def new(cls, base: str = BASE) -> "RunTag":
        return cls(secrets.token_hex(3), base)

    @property
    def alias(self) -> str:
        return ALIAS_PREFIX + self.run

    @property
    def dir(self) -> str:
        return os.path.join(runs_dir(self.base), self.run)

    @property
    def pin_dir(self) -> str:
        return os.path.join(bpffs_dir(self.base), self.run)

    def netns(self, node: str) -> str:
        return f"{NETNS_PREFIX}{self.run}-{node}"

    def env(self) -> dict[str, str]:
        return {**os.environ, ENV_TAG: self.run}

    def write_state(self, **state) -> None:
        os.makedirs(self.dir, exist_ok=True)
        tmp = os.path.join(self.dir, "state.json.tmp")
        with open(tmp, "w") as fh:
            json.dump({"run": self.run, "pid_start": proc_starttime(os.getpid()), **state},
                      fh, indent=1)
        os.replace(tmp, os.path.join(self.dir, "state.json"))


def read_states(base: str = BASE) -> list[dict]:
    """state.json of every run folder present (live or left behind)."""
    out = []
    root = runs_dir(base)
    for run in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        try:
            with open(os.path.join(root, run, "state.json")) as fh:
                out.append(json.load(fh))
        except (OSError, ValueError):
            out.append({"run": run})
    return out


@contextlib.contextmanager
def bpffs_lock(base: str = BASE):
    """Serialises mounting/unmounting the shared bpffs between concurrent labs."""
    os.makedirs(base, exist_ok=True)
    with open(os.path.join(base, "bpffs.lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def ensure_bpffs(tag: "RunTag") -> str:
    """Mount the lab's own bpffs (pins never land in a system-wide /sys/fs/bpf) and claim
    the run's folder in it at once, so a concurrent teardown never unmounts it under us."""
    path = bpffs_dir(tag.base)
    with bpffs_lock(tag.base):
        os.makedirs(path, exist_ok=True)
        if not _is_bpffs(path):
            subprocess.run(["mount", "-t", "bpf", "flexnet-bpffs", path], check=True,
                           capture_output=True)
        os.makedirs(tag.pin_dir, exist_ok=True)
    return path


def _is_bpffs(path: str) -> bool:
    with open("/proc/self/mounts") as fh:
        return any(line.split()[1] == path and line.split()[2] == "bpf" for line in fh)


def proc_starttime(pid: int) -> int | None:
    """Start time of a process (clock ticks since boot): tells a pid from a reused one."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def signals_deferred():
    """SIGINT/SIGTERM/SIGHUP held back while the block runs, delivered when it ends: the
    lab turns them into KeyboardInterrupt, and one raised inside a gRPC or netlink call
    (handing devices over, tearing down) can leave a lock held and hang the teardown."""
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
