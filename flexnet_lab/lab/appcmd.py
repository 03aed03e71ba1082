"""The words of an `app` command (prompt or CLI) as a control-channel request: pure
parsing, shared by `flexnet app ...` and the prompt's `app ...`."""
from __future__ import annotations

import os

USAGE = ("app deploy URI FUNCTION [--on DEV,DEV] [--serves SRC,DST] [--replicas N] "
         "[--switch-state-kb K] [--param NAME=VALUE] | app deploy URI --delta FILE --on PATTERN"
         " | app remove URI | app show URI | app list | app migrate URI --to DEVICE | "
         "app scale URI --to N | app events [--since ID]")


class AppCommandError(ValueError):
    """The words do not form an app command; the message is the usage."""


def _options(words: list[str], allowed: set[str]) -> tuple[list[str], dict[str, list[str]]]:
    plain, opts = [], {}
    i = 0
    while i < len(words):
        w = words[i]
        if w.startswith("--"):
            name = w[2:]
            if name not in allowed or i + 1 >= len(words):
                raise AppCommandError(USAGE)
            opts.setdefault(name, []).append(words[i + 1])
            i += 2
        else:
            plain.append(w)
            i += 1
    return plain, opts


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise AppCommandError(USAGE) from None


def app_request(words: list[str]) -> tuple[str, dict]:
    """(op, arguments) for the control channel."""
    if not words:
        raise AppCommandError(USAGE)
    verb, rest = words[0], words[1:]
    if verb == "deploy":
        plain, o = _options(rest, {"on", "serves", "replicas", "switch-state-kb", "param",
                                   "delta"})
        if not plain or len(plain) > 2 or (len(plain) == 2) == ("delta" in o):
            raise AppCommandError(USAGE)
        spec: dict = {}
        if "delta" in o:
            spec["delta"] = os.path.abspath(o["delta"][0])
        else:
            fn = plain[1]
            spec["function"] = os.path.abspath(fn) if ("/" in fn or fn.endswith(".yaml")) else fn
        if "on" in o:
            on = o["on"][0]
            spec["on"] = on if "delta" in o else on.split(",")
        if "serves" in o:
            spec["serves"] = o["serves"][0].split(",")
        if "replicas" in o:
            spec["replicas"] = _int(o["replicas"][0])
        if "switch-state-kb" in o:
            try:
                spec["switch_state_kb"] = float(o["switch-state-kb"][0])
            except ValueError:
                raise AppCommandError(USAGE) from None
        if "param" in o:
            spec["params"] = dict(p.partition("=")[::2] for p in o["param"])
        return "deploy", {"uri": plain[0], "spec": spec}
    if verb in ("remove", "show") and len(rest) == 1:
        return verb, {"uri": rest[0]}
    if verb == "list" and not rest:
        return "list", {}
    if verb in ("migrate", "scale"):
        plain, o = _options(rest, {"to"})
        if len(plain) != 1 or "to" not in o:
            raise AppCommandError(USAGE)
        to = o["to"][0] if verb == "migrate" else _int(o["to"][0])
        return verb, {"uri": plain[0], "to": to}
    if verb == "events":
        _, o = _options(rest, {"since"})
        return "events", {"since": _int(o["since"][0]) if "since" in o else 0}
    raise AppCommandError(USAGE)
