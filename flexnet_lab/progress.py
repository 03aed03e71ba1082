"""Progress of long work (bringing a big lab up, the all-pairs check) on stderr.

On a terminal: one bar redrawn in place. Otherwise (a log, a pipe, CI): plain lines, one
when a step starts, at every quarter of it and when it ends, so a log shows where the time
went without thousands of lines.
"""
from __future__ import annotations

import sys
import threading
import time

_BAR = 30
_REDRAW_S = 0.1


class Progress:
    """Reports steps of a named job; each step has a label and a count of units.

        p = Progress("fat-tree-k8")
        p.step("node shells", 208); p.advance() ...; p.end(); p.finish("up in 4.1 s")

    advance() may be called from several threads."""

    def __init__(self, job: str, stream=None, tty: bool | None = None):
        self.job = job
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self._lock = threading.Lock()
        self._label, self._total, self._done = "", 0, 0
        self._t0 = self._step_t0 = time.monotonic()
        self._drawn = 0.0
        self._quarter = 0
        self._open = False

    def step(self, label: str, total: int = 0) -> None:
        """Start a step of `total` units (0: a step without a count)."""
        with self._lock:
            self._end_step()
            self._label, self._total, self._done = label, total, 0
            self._step_t0 = time.monotonic()
            self._quarter = 0
            self._open = True
            if self.tty:
                self._draw(force=True)
            else:
                self._line(f"{label}" + (f" (0/{total})" if total else "") + " ...")

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self._done += n
            if self.tty:
                self._draw()
            elif self._total:
                quarter = 4 * self._done // self._total
                if 0 < quarter < 4 and quarter > self._quarter:
                    self._quarter = quarter
                    self._line(f"{self._label}: {self._done}/{self._total}")

    def end(self) -> None:
        """End the current step (its closing line)."""
        with self._lock:
            self._end_step()

    def finish(self, message: str = "") -> None:
        """End the job, with a closing line."""
        with self._lock:
            self._end_step()
            text = message or "done"
            self._line(f"{text} ({time.monotonic() - self._t0:.1f} s)")

    # --- output ---------------------------------------------------------------------------
    def _end_step(self) -> None:
        if not self._open:
            return
        self._open = False
        took = time.monotonic() - self._step_t0
        count = f" {self._done}/{self._total}" if self._total else ""
        if self.tty:
            self._draw(force=True)
            self.stream.write("\n")
            self.stream.flush()
        else:
            self._line(f"{self._label}:{count} done in {took:.1f} s")

    def _line(self, text: str) -> None:
        self.stream.write(f"{self.job}: {text}\n")
        self.stream.flush()

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._drawn < _REDRAW_S:
            return
        self._drawn = now
        if self._total:
            filled = min(_BAR, _BAR * self._done // self._total)
            bar = f"[{'#' * filled}{'.' * (_BAR - filled)}] {self._done}/{self._total}"
        else:
            bar = "..."
        self.stream.write(f"\r\x1b[K{self.job}: {self._label} {bar} "
                          f"{now - self._step_t0:.1f} s")
        self.stream.flush()


class Silent:
    """A Progress that reports nothing (library default)."""

    def step(self, label: str, total: int = 0) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def end(self) -> None:
        pass

    def finish(self, message: str = "") -> None:
        pass
