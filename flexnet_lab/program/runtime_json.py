"""The runtime JSON of P4 coursework (the `sN-runtime.json` files the common tutorials'
tooling installs over P4Runtime), read and checked for form. Checking names and widths
against a program's P4Info is compiler/p4_user.py's (it needs the compiled program).

    {"target": "bmv2",
     "p4info": "build/basic.p4.p4info.txt",
     "bmv2_json": "build/basic.json",
     "table_entries": [
       {"table": "MyIngress.ipv4_lpm", "default_action": true,
        "action_name": "MyIngress.drop", "action_params": {}},
       {"table": "MyIngress.ipv4_lpm", "match": {"hdr.ipv4.dstAddr": ["10.0.1.1", 32]},
        "action_name": "MyIngress.ipv4_forward",
        "action_params": {"dstAddr": "08:00:00:00:01:11", "port": 1}}],
     "multicast_group_entries": [
       {"multicast_group_id": 1, "replicas": [{"egress_port": 1, "instance": 1}]}]}

Match values: exact `v`, lpm `[v, prefix]`, ternary `[v, mask]`, range `[low, high]`;
a value is a number, an IPv4 address ("10.0.1.1"), a MAC ("08:00:00:00:01:11") or a hex
string ("0x0800"). `p4info`/`bmv2_json` are paths relative to the exercise folder; where
they do not exist (no `build/` yet) the lab's own compile supplies them.
"""
from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Any

from ..errors import P4FileError
from ..inputs import read_json_file, show

MAX_ENTRIES = 100_000
_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
_HEX = re.compile(r"0[xX][0-9a-fA-F]{1,64}")
_ENTRY_KEYS = ("table", "match", "action_name", "action_params", "priority",
               "default_action")


@dataclass(frozen=True)
class RawEntry:
    """One item of table_entries, values already numbers; `field` is where it was
    (table_entries[3]) for errors."""
    field: str
    table: str
    match: tuple            # ((field name, value | (a, b)), ...) in file order
    action: str
    params: tuple           # ((param name, value), ...)
    priority: int | None
    default: bool


@dataclass(frozen=True)
class RuntimeFile:
    source: str
    base: str               # the exercise folder (relative paths)
    p4info: str | None      # absolute; may not exist yet
    bmv2_json: str | None
    entries: tuple[RawEntry, ...]
    multicast: tuple        # ((group id, ((egress port, instance), ...)), ...)


def value_of(v: Any, source: str, field: str) -> int:
    """A runtime-file value as a number (what P4Runtime sends as bytes)."""
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise P4FileError(source, field, f"expected a number, an IPv4 or MAC address or a "
                          f"hex string, got {show(v)}")
    if isinstance(v, int):
        if v < 0:
            raise P4FileError(source, field, f"negative value {show(v)}")
        return v
    s = v.strip()
    if _MAC.fullmatch(s):
        return int(s.replace(":", ""), 16)
    if _HEX.fullmatch(s):
        return int(s, 16)
    if s.isdigit() and len(s) < 40:
        return int(s)
    try:
        return int(ipaddress.ip_address(s))
    except ValueError:
        raise P4FileError(source, field, f"{show(v)} is not a number, an IPv4/IPv6 or MAC "
                          "address or a hex string") from None


def load_runtime(path: str, base: str) -> RuntimeFile:
    """Read a runtime JSON file; P4FileError(file, field) for anything malformed."""
    def error(field, message):
        return P4FileError(path, field, message)
    data = read_json_file(path, error)
    return parse_runtime(data, path, base)


def parse_runtime(data: Any, source: str, base: str) -> RuntimeFile:
    def err(field: str, message: str) -> P4FileError:
        return P4FileError(source, field, message)
    if not isinstance(data, dict):
        raise err("<root>", f"expected a JSON object, got {type(data).__name__}")
    allowed = ("target", "p4info", "bmv2_json", "table_entries", "multicast_group_entries")
    for key in data:
        if key not in allowed:
            raise err(str(key)[:40], f"unknown key {show(key)}; allowed: {', '.join(allowed)}"
                      + (" (clone sessions are not supported)" if key == "clone_session_entries"
                         else ""))
    target = data.get("target", "bmv2")
    if target != "bmv2":
        raise err("target", f"expected \"bmv2\", got {show(target)}")
    paths = {}
    for key in ("p4info", "bmv2_json"):
        v = data.get(key)
        if v is None:
            paths[key] = None
            continue
        if not isinstance(v, str) or not v.strip():
            raise err(key, f"expected a file path, got {show(v)}")
        paths[key] = os.path.abspath(v if os.path.isabs(v) else os.path.join(base, v))
    items = data.get("table_entries", [])
    if not isinstance(items, list) or len(items) > MAX_ENTRIES:
        raise err("table_entries", f"expected a list of at most {MAX_ENTRIES} entries, got "
                  f"{show(items)}")
    entries = tuple(_entry(err, source, item, f"table_entries[{i}]")
                    for i, item in enumerate(items))
    groups = data.get("multicast_group_entries", [])
    if not isinstance(groups, list):
        raise err("multicast_group_entries", f"expected a list, got {show(groups)}")
    return RuntimeFile(source, base, paths["p4info"], paths["bmv2_json"], entries,
                       tuple(_group(err, source, g, f"multicast_group_entries[{i}]", groups[:i])
                             for i, g in enumerate(groups)))


def _entry(err, source: str, item: Any, field: str) -> RawEntry:
    if not isinstance(item, dict):
        raise err(field, f"expected an object, got {show(item)}")
    for key in item:
        if key not in _ENTRY_KEYS:
            raise err(f"{field}.{str(key)[:40]}", f"unknown key {show(key)}; allowed: "
                      f"{', '.join(_ENTRY_KEYS)}")
    for key in ("table", "action_name"):
        if not isinstance(item.get(key), str) or not item[key]:
            raise err(f"{field}.{key}", f"expected a name, got {show(item.get(key))}")
    default = item.get("default_action", False)
    if not isinstance(default, bool):
        raise err(f"{field}.default_action", f"expected true or false, got {show(default)}")
    match = item.get("match", {})
    if not isinstance(match, dict):
        raise err(f"{field}.match", f"expected an object of field: value, got {show(match)}")
    if default and match:
        raise err(f"{field}.match", "a default action has no match")
    if not default and not match:
        raise err(f"{field}.match", "missing (or set \"default_action\": true)")
    out = []
    for name, v in match.items():
        f = f"{field}.match.{name}"
        if isinstance(v, list):
            if len(v) != 2:
                raise err(f, f"expected [value, prefix], [value, mask] or [low, high], got "
                          f"{show(v)}")
            out.append((name, (value_of(v[0], source, f), value_of(v[1], source, f))))
        else:
            out.append((name, value_of(v, source, f)))
    params = item.get("action_params", {})
    if not isinstance(params, dict):
        raise err(f"{field}.action_params", f"expected an object, got {show(params)}")
    prio = item.get("priority")
    if prio is not None and (isinstance(prio, bool) or not isinstance(prio, int)
                             or not 1 <= prio < 1 << 31):
        raise err(f"{field}.priority", f"expected a number 1..2^31-1, got {show(prio)}")
    return RawEntry(field, item["table"], tuple(out), item["action_name"],
                    tuple((n, value_of(v, source, f"{field}.action_params.{n}"))
                          for n, v in params.items()), prio, default)


def _group(err, source: str, g: Any, field: str, before: list) -> tuple:
    if not isinstance(g, dict) or set(g) - {"multicast_group_id", "replicas"}:
        raise err(field, "expected {\"multicast_group_id\": N, \"replicas\": [...]}, got "
                  f"{show(g)}")
    gid = g.get("multicast_group_id")
    if isinstance(gid, bool) or not isinstance(gid, int) or not 1 <= gid < 1 << 16:
        raise err(f"{field}.multicast_group_id", f"expected 1..65535, got {show(gid)}")
    if any(isinstance(b, dict) and b.get("multicast_group_id") == gid for b in before):
        raise err(f"{field}.multicast_group_id", f"group {gid} is listed twice")
    reps = g.get("replicas")
    if not isinstance(reps, list):
        raise err(f"{field}.replicas", f"expected a list, got {show(reps)}")
    out = []
    for i, r in enumerate(reps):
        f = f"{field}.replicas[{i}]"
        if not isinstance(r, dict) or set(r) - {"egress_port", "instance"} or \
                "egress_port" not in r:
            raise err(f, f"expected {{\"egress_port\": P, \"instance\": I}}, got {show(r)}")
        port, inst = r["egress_port"], r.get("instance", 1)
        for k, v in (("egress_port", port), ("instance", inst)):
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 1 << 16:
                raise err(f"{f}.{k}", f"expected 0..65535, got {show(v)}")
        out.append((port, inst))
    return gid, tuple(out)
