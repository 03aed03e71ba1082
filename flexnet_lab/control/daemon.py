"""The controller as a process of its own: `python -m flexnet_lab.control.daemon RUN_DIR`.

It adopts the devices of a running lab (from RUN_DIR/fabric.json and the pins), loads the
intent from RUN_DIR/intent.db, rolls back a change a crash cut short, reconciles twice a
second and serves the control channel on RUN_DIR/control.sock. SIGKILL at any moment loses
nothing acknowledged: a restarted daemon takes over the devices as they are (what matches
the intent is not touched, so traffic does not notice). `Supervisor` (used by `flexnet up`)
starts it and starts it again when it dies."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from ..errors import ControlError, FlexNetError
from ..lab.fabric import Fabric
from .channel import ControlClient, ControlServer, socket_path
from .controller import Controller
from .devices import Devices
from .service import Service
from .store import SqliteStore

RECONCILE_S = 0.5


def store_path(run_dir: str) -> str:
    return os.path.join(run_dir, "intent.db")


def serve(run_dir: str, reconcile_s: float = RECONCILE_S, store: str | None = None) -> int:
    fabric = Fabric.load(run_dir)
    store = SqliteStore(store or store_path(run_dir))
    devices = Devices(fabric)
    ctl = Controller(fabric, store, devices)
    for note in ctl.start():
        print(f"controller: {note}", flush=True)
    ctl.reconcile()            # repair before serving: the first answer is about a healed net
    server = ControlServer(socket_path(run_dir), Service(ctl).handlers())
    done = threading.Event()

    def stop(signum, frame):
        done.set()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    ctl.start_reconciler(reconcile_s)
    server.serve_background()
    print(f"controller: serving {socket_path(run_dir)} (pid {os.getpid()})", flush=True)
    done.wait()
    ctl.stop()
    server.close()
    with ctl._lock:
        devices.release()
    store.close()
    return 0


class Supervisor:
    """Runs the controller daemon of a run and starts it again whenever it dies."""

    def __init__(self, run_dir: str, env: dict, restart: bool = True, store: str | None = None):
        self.run_dir, self.env, self.restart = run_dir, env, restart
        self.store = store
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.log_path = os.path.join(run_dir, "controller.log")

    def start(self, timeout_s: float = 30.0) -> None:
        self._spawn()
        self.wait_ready(timeout_s)
        if self.restart:
            self._thread = threading.Thread(target=self._watch, daemon=True, name="supervisor")
            self._thread.start()

    def _spawn(self) -> None:
        log = open(self.log_path, "a")
        extra = ["--store", self.store] if self.store else []
        self.proc = subprocess.Popen([sys.executable, "-m", "flexnet_lab.control.daemon",
                                      self.run_dir, *extra], env=self.env, stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL,
                                     # a terminal's Ctrl-C is for the lab, which stops it
                                     start_new_session=True)
        log.close()

    def wait_ready(self, timeout_s: float = 30.0) -> float:
        """Until the daemon answers on its socket; returns the seconds it took."""
        t0 = time.monotonic()
        client = ControlClient(socket_path(self.run_dir), timeout_s=2)
        while True:
            try:
                if client.call("ping")["pid"] == self.proc.pid:
                    return time.monotonic() - t0
            except ControlError:
                pass
            if self.proc.poll() is not None and not self.restart:
                raise ControlError(f"the controller exited ({self.proc.returncode}); see "
                                   f"{self.log_path}: {_tail(self.log_path)}")
            if time.monotonic() - t0 > timeout_s:
                raise ControlError(f"the controller did not answer within {timeout_s:.0f} s; "
                                   f"see {self.log_path}: {_tail(self.log_path)}")
            time.sleep(0.02)

    def _watch(self) -> None:
        while not self._stop.is_set():
            proc = self.proc
            proc.wait()
            if self._stop.is_set():
                return
            self.restarts += 1
            self._spawn()

    def stop(self) -> None:
        self._stop.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _tail(path: str) -> str:
    try:
        with open(path, errors="replace") as fh:
            return " ".join(fh.read()[-300:].split()) or "(empty)"
    except OSError:
        return "(no log)"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    store = None
    if len(argv) == 3 and argv[1] == "--store":
        argv, store = argv[:1], argv[2]
    if len(argv) != 1:
        print("usage: python -m flexnet_lab.control.daemon RUN_DIR [--store PATH]",
              file=sys.stderr)
        return 2
    try:
        return serve(argv[0], store=store)
    except FlexNetError as exc:
        print(f"controller: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
