"""Where the intent lives: an embedded SQLite database in the run folder (WAL, synchronous
commits, mode 0600). Every change is written as `pending` with the device intents before
and after it, before any device is touched; `commit` makes the after-state the intent and
marks the change done in one transaction. A change still pending when a controller starts
was cut short: the controller rolls it back (see Controller.recover).

The controller uses the store only through `IntentStore`, so a replicated store can take
SqliteStore's place."""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Protocol

from ..errors import StoreError
from ..program.yaml_form import program_to_dict
from .intent import AppRecord, DeviceIntent, Intent, entry_to_json

_SCHEMA = """
CREATE TABLE IF NOT EXISTS device (name TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS app (uri TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS change (
    id INTEGER PRIMARY KEY AUTOINCREMENT, op TEXT NOT NULL, status TEXT NOT NULL,
    started REAL NOT NULL, finished REAL, before TEXT NOT NULL, after TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS event (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, kind TEXT NOT NULL,
    device TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS snapshot (
    device TEXT NOT NULL, map TEXT NOT NULL, at REAL NOT NULL, doc TEXT NOT NULL,
    PRIMARY KEY (device, map));
"""


@dataclass(frozen=True)
class PendingChange:
    id: int
    op: str
    before: dict      # device name -> DeviceIntent | None; "apps" -> {uri: AppRecord | None}
    after: dict


@dataclass(frozen=True)
class Event:
    id: int
    at: float
    kind: str
    device: str
    detail: str

    def to_json(self) -> dict:
        return {"id": self.id, "at": self.at, "kind": self.kind, "device": self.device,
                "detail": self.detail}


class IntentStore(Protocol):
    """What the controller needs of a store."""

    def load(self) -> Intent: ...
    def begin(self, op: str, before: Intent, after: Intent) -> int: ...
    def commit(self, change_id: int, after: Intent, detail: str = "",
               event: tuple[str, str, str] | None = None) -> None: ...
    def abort(self, change_id: int, detail: str) -> None: ...
    def pending(self) -> list[PendingChange]: ...
    def put_devices(self, devices: list[DeviceIntent]) -> None: ...
    def log(self, kind: str, device: str, detail: str) -> None: ...
    def events(self, since: int = 0, limit: int = 200) -> list[Event]: ...
    def changes(self, limit: int = 50) -> list[dict]: ...
    def put_snapshot(self, device: str, name: str, values) -> None: ...
    def snapshot(self, device: str, name: str) -> tuple[float, object] | None: ...
    def close(self) -> None: ...


class _Docs:
    """JSON text of device intents. What repeats from one change to the next is encoded
    once: a program (20 switches run one; a change and its inverse alternate two) and a
    device's entries (a program change keeps a switch's routes). Bounded."""

    KEPT = 512

    def __init__(self) -> None:
        self._text: dict = {}

    def _cached(self, key, make) -> str:
        text = self._text.get(key)
        if text is None:
            if len(self._text) >= self.KEPT:
                self._text.clear()
            text = self._text[key] = json.dumps(make())
        return text

    def device(self, d: DeviceIntent) -> str:
        if d.functions or d.p4 is not None or d.program is None:
            return json.dumps(d.to_json())
        # the same document as d.to_json(), its two big parts cached
        prog = self._cached(("program", d.program), lambda: program_to_dict(d.program))
        entries = self._cached(("entries", d.entries), lambda: sorted(
            (entry_to_json(e) for e in d.entries), key=repr))
        return (f'{{"name": {json.dumps(d.name)}, "kind": {json.dumps(d.kind)}, '
                f'"prog_id": {int(d.prog_id)}, "program": {prog}, "functions": [], '
                f'"p4": null, "entries": {entries}}}')

    def part(self, intent: Intent) -> str:
        devices = ", ".join(f"{json.dumps(n)}: {self.device(d) if d else 'null'}"
                            for n, d in intent.devices.items())
        apps = json.dumps({u: a.to_json() if a else None for u, a in intent.apps.items()})
        return f'{{"devices": {{{devices}}}, "apps": {apps}}}'


class SqliteStore:
    """IntentStore on one SQLite file. Thread-safe (one connection, one lock)."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._docs = _Docs()
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            os.close(fd)
            os.chmod(path, 0o600)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"intent store {path}: {exc}") from exc
        for suffix in ("-wal", "-shm"):  # WAL side files get the same mode
            if os.path.exists(path + suffix):
                os.chmod(path + suffix, 0o600)

    def _tx(self, fn):
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    out = fn(self._db)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                return out
            except sqlite3.Error as exc:
                raise StoreError(f"intent store {self.path}: {exc}") from exc

    def load(self) -> Intent:
        def read(db):
            devs = {n: DeviceIntent.from_json(json.loads(doc))
                    for n, doc in db.execute("SELECT name, doc FROM device")}
            apps = {u: AppRecord.from_json(json.loads(doc))
                    for u, doc in db.execute("SELECT uri, doc FROM app")}
            return Intent(devs, apps)
        return self._tx(read)

    def begin(self, op: str, before: Intent, after: Intent) -> int:
        return self._tx(lambda db: db.execute(
            "INSERT INTO change (op, status, started, before, after) VALUES (?, 'pending', ?, ?, ?)",
            (op, time.time(), self._docs.part(before), self._docs.part(after))).lastrowid)

    def commit(self, change_id: int, after: Intent, detail: str = "",
               event: tuple[str, str, str] | None = None) -> None:
        """The change done and its after-state the intent; event (kind, device, detail):
        logged in the same transaction."""
        def write(db):
            self._write(db, after)
            db.execute("UPDATE change SET status='done', finished=?, detail=? WHERE id=?",
                       (time.time(), detail, change_id))
            if event is not None:
                db.execute("INSERT INTO event (at, kind, device, detail) VALUES (?, ?, ?, ?)",
                           (time.time(), *event))
        self._tx(write)

    def _write(self, db, part: Intent) -> None:
        """Write the devices and apps of a partial intent; a None value deletes."""
        for name, dev in part.devices.items():
            if dev is None:
                db.execute("DELETE FROM device WHERE name=?", (name,))
            else:
                db.execute("INSERT OR REPLACE INTO device (name, doc) VALUES (?, ?)",
                           (name, self._docs.device(dev)))
        for uri, app in part.apps.items():
            if app is None:
                db.execute("DELETE FROM app WHERE uri=?", (uri,))
            else:
                db.execute("INSERT OR REPLACE INTO app (uri, doc) VALUES (?, ?)",
                           (uri, json.dumps(app.to_json())))

    def abort(self, change_id: int, detail: str) -> None:
        self._tx(lambda db: db.execute(
            "UPDATE change SET status='rolled back', finished=?, detail=? WHERE id=?",
            (time.time(), detail, change_id)))

    def pending(self) -> list[PendingChange]:
        def read(db):
            return [PendingChange(i, op, _unpart_none(b), _unpart_none(a)) for i, op, b, a in
                    db.execute("SELECT id, op, before, after FROM change "
                               "WHERE status='pending' ORDER BY id")]
        return self._tx(read)

    def put_devices(self, devices: list[DeviceIntent]) -> None:
        self._tx(lambda db: self._write(db, Intent({d.name: d for d in devices}, {})))

    def log(self, kind: str, device: str, detail: str) -> None:
        self._tx(lambda db: db.execute(
            "INSERT INTO event (at, kind, device, detail) VALUES (?, ?, ?, ?)",
            (time.time(), kind, device, detail)))

    def events(self, since: int = 0, limit: int = 200) -> list[Event]:
        return self._tx(lambda db: [Event(*row) for row in db.execute(
            "SELECT id, at, kind, device, detail FROM event WHERE id > ? ORDER BY id DESC "
            "LIMIT ?", (since, limit))][::-1])

    def changes(self, limit: int = 50) -> list[dict]:
        return self._tx(lambda db: [
            {"id": i, "op": op, "status": st, "started": s, "finished": f, "detail": d}
            for i, op, st, s, f, d in db.execute(
                "SELECT id, op, status, started, finished, detail FROM change "
                "ORDER BY id DESC LIMIT ?", (limit,))][::-1])

    def put_snapshot(self, device: str, name: str, values) -> None:
        self._tx(lambda db: db.execute(
            "INSERT OR REPLACE INTO snapshot (device, map, at, doc) VALUES (?, ?, ?, ?)",
            (device, name, time.time(), json.dumps(values))))

    def snapshot(self, device: str, name: str):
        rows = self._tx(lambda db: list(db.execute(
            "SELECT at, doc FROM snapshot WHERE device=? AND map=?", (device, name))))
        return (rows[0][0], json.loads(rows[0][1])) if rows else None

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _unpart_none(text: str) -> dict:
    """A change's before/after: devices and apps, where a None means absent."""
    d = json.loads(text)
    return {"devices": {n: (DeviceIntent.from_json(v) if v else None)
                        for n, v in d["devices"].items()},
            "apps": {u: (AppRecord.from_json(v) if v else None) for u, v in d["apps"].items()}}
