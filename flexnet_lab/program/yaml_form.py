"""The YAML form of a FlexBPF-lite program.

Form::

    name: my_prog
    headers: [ethernet, ipv4, udp]                 # names from the header library, or
    #  - {name: tel, fields: [[magic, 16], [hop_count, 8]]}   # user-defined
    metadata: {l3_dst: 32}                         # name: bits, in order
    parser:                                        # the first state is the start state
      - {name: start, extract: ethernet, select: [ethernet.ethertype],
         cases: [[[0x0800], ipv4]], default: accept, sets: [[meta.l3_dst, ipv4.dst]]}
    maps:
      pkts: {kind: counter, size: 1}               # also key_bits (32), rows, rate, burst (0)
    actions:
      forward: {params: [[port, 16]], ops: [[forward, $port]]}
    tables:
      l3_fwd: {keys: [[meta.l3_dst, lpm]], actions: [forward, drop], default: drop,
               default_args: [], size: 1024}
    control:
      - {ops: [[count, pkts, 0]]}
      - {apply: l3_fwd}

Shorthands: a single-field select's cases may be a mapping ``{0x0800: ipv4}``; a case's
values may be a bare int for a single field; a key may be a bare field name (exact match);
an op without arguments may be a bare name (``nop``). Op arguments written as YAML lists
become tuples (``[map_add, flows, [ipv4.src, ipv4.dst]]``). ``extract``, ``select``,
``cases``, ``sets``, ``default`` (accept), ``params``, ``ops``, ``default_args`` and ``size``
(256) are optional; ``name``, map ``kind``/``size`` and table ``keys``/``actions``/``default``
are required. Unknown keys and duplicate mapping keys are errors. Mapping order is
significant (metadata layout, order of maps, actions and tables): dump with
``sort_keys=False`` (``program_to_yaml`` does).

Every problem raises one ``ProgramError`` whose element is ``<source>: <path>``, e.g.
``my.yaml: tables.acl.size`` (paths as in ``validate``); ``<file>``/``<yaml>`` name read and
syntax errors. The result always goes through ``validate``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, NoReturn

import yaml

from flexnet_lab.errors import ProgramError
from flexnet_lab.inputs import read_yaml_file, show

from . import library
from .headers import LIBRARY
from .model import (Action, Field, Header, Key, Map, Op, ParserState, Program, Stmt, Table,
                    Transition)
from .validate import validate

PROGRAM_KEYS = ("name", "headers", "metadata", "parser", "maps", "actions", "tables", "control")
STATE_KEYS = ("name", "extract", "sets", "select", "cases", "default")
MAP_KEYS = ("kind", "size", "key_bits", "rows", "rate", "burst")
ACTION_KEYS = ("params", "ops")
TABLE_KEYS = ("keys", "actions", "default", "default_args", "size")
HEADER_KEYS = ("name", "fields")
STMT_KEYS = ("apply", "ops")


# -- public API ------------------------------------------------------------------------


def program_from_dict(data: Any, source: str = "<data>") -> Program:
    """Build and validate a Program from its parsed YAML form."""
    try:
        return validate(_program(data))
    except ProgramError as exc:
        raise ProgramError(f"{source}: {exc.element}", exc.message) from exc


def program_to_dict(program: Program) -> dict:
    """The YAML form of ``program``; ``program_from_dict`` of it gives ``program`` back."""
    out: dict[str, Any] = {"name": program.name}
    sections = {
        "headers": [header_to_dict(h) for h in program.headers],
        "metadata": {f.name: f.bits for f in program.metadata},
        "parser": [state_to_dict(s) for s in program.parser],
        "maps": {m.name: map_to_dict(m) for m in program.maps},
        "actions": {a.name: action_to_dict(a) for a in program.actions},
        "tables": {t.name: table_to_dict(t) for t in program.tables},
        "control": [_stmt_to_dict(s) for s in program.control],
    }
    out.update((k, v) for k, v in sections.items() if v)
    return out


def program_to_yaml(program: Program) -> str:
    """The YAML text of ``program`` (mapping order kept: it is significant)."""
    return yaml.safe_dump(program_to_dict(program), sort_keys=False)


def load_program(path: str | Path) -> Program:
    """A program from a YAML file, or by name: "infra" or a key of library.HOST_PROGRAMS
    (a name wins unless a file by that name exists)."""
    name = str(path)
    factories: dict[str, Callable[[], Program]] = {"infra": library.infrastructure,
                                                   **library.HOST_PROGRAMS}
    if name in factories and not Path(name).is_file():
        return validate(factories[name]())
    data = read_yaml(path, ProgramError)
    return program_from_dict(data, name)


def read_yaml(path: str | Path, error: Callable[[str, str], Exception]) -> Any:
    """Parse a YAML file strictly (inputs.StrictLoader: no duplicate keys, no alias bombs);
    ``error(element, message)`` makes the exception raised."""
    return read_yaml_file(str(path), lambda field, message: error(f"{path}: {field}", message))


# -- elements from data (errors: ProgramError with a path relative to the document) --


def header_from_dict(data: Any, path: str) -> Header:
    """A library header by name, or ``{name, fields: [[name, bits], ...]}``."""
    if isinstance(data, str):
        if data not in LIBRARY:
            _fail(path, f"unknown library header {show(data)}; one of {', '.join(LIBRARY)}")
        return LIBRARY[data]
    data = _mapping(data, path)
    _keys(data, HEADER_KEYS, path, required=HEADER_KEYS)
    fields = tuple(Field(*_pair(f, f"{path}.fields[{i}]"))
                   for i, f in enumerate(_list(data["fields"], f"{path}.fields")))
    return Header(data["name"], fields)


def state_from_dict(data: Any, path: str) -> ParserState:
    """``{name, extract, sets, select, cases, default}``."""
    data = _mapping(data, path)
    _keys(data, STATE_KEYS, path, required=("name",))
    sets = tuple(_pair(p, f"{path}.sets[{i}]")
                 for i, p in enumerate(_list(data.get("sets"), f"{path}.sets")))
    select = tuple(_list(data.get("select"), f"{path}.select"))
    cases = _cases(data.get("cases"), f"{path}.cases")
    transition = Transition(select, cases, data.get("default", "accept"))
    return ParserState(data["name"], data.get("extract"), sets, transition)


def map_from_dict(name: Any, data: Any, path: str) -> Map:
    """``{kind, size, key_bits, rows, rate, burst}``."""
    data = _mapping(data, path)
    _keys(data, MAP_KEYS, path, required=("kind", "size"))
    return Map(name, **data)


def action_from_dict(name: Any, data: Any, path: str) -> Action:
    """``{params: [[name, bits], ...], ops: [[op, arg, ...], ...]}``."""
    data = _mapping(data, path, optional=True)
    _keys(data, ACTION_KEYS, path)
    params = tuple(_pair(p, f"{path}.params[{i}]")
                   for i, p in enumerate(_list(data.get("params"), f"{path}.params")))
    return Action(name, params, ops_from_list(data.get("ops"), f"{path}.ops"))


def table_from_dict(name: Any, data: Any, path: str, extra: tuple[str, ...] = ()) -> Table:
    """``{keys, actions, default, default_args, size}``; ``extra`` keys are allowed and
    ignored (the caller reads them)."""
    data = _mapping(data, path)
    _keys(data, TABLE_KEYS + extra, path, required=("keys", "actions", "default"))
    keys = tuple(_key(k, f"{path}.keys[{i}]")
                 for i, k in enumerate(_list(data["keys"], f"{path}.keys")))
    return Table(name, keys, tuple(_list(data["actions"], f"{path}.actions")), data["default"],
                 tuple(_list(data.get("default_args"), f"{path}.default_args")),
                 data.get("size", 256))


def ops_from_list(data: Any, path: str) -> tuple[Op, ...]:
    """``[[op, arg, ...] | op, ...]``; list arguments become tuples."""
    return tuple(_op(op, f"{path}[{i}]") for i, op in enumerate(_list(data, path)))


# -- elements to data ------------------------------------------------------------------


def header_to_dict(header: Header) -> str | dict:
    """The library name when ``header`` is the library's, else ``{name, fields}``."""
    if LIBRARY.get(header.name) == header:
        return header.name
    return {"name": header.name, "fields": [[f.name, f.bits] for f in header.fields]}


def state_to_dict(state: ParserState) -> dict:
    out: dict[str, Any] = {"name": state.name}
    if state.extract is not None:
        out["extract"] = state.extract
    if state.sets:
        out["sets"] = [list(p) for p in state.sets]
    tr = state.transition
    if tr.select:
        out["select"] = list(tr.select)
    if tr.cases:
        out["cases"] = [[list(values), target] for values, target in tr.cases]
    if tr.default != "accept":
        out["default"] = tr.default
    return out


def map_to_dict(m: Map) -> dict:
    out: dict[str, Any] = {"kind": m.kind, "size": m.size}
    if m.key_bits != 32:
        out["key_bits"] = m.key_bits
    out.update((k, getattr(m, k)) for k in ("rows", "rate", "burst") if getattr(m, k))
    return out


def action_to_dict(action: Action) -> dict:
    out: dict[str, Any] = {}
    if action.params:
        out["params"] = [list(p) for p in action.params]
    out["ops"] = [op_to_list(op) for op in action.ops]
    return out


def table_to_dict(table: Table) -> dict:
    out: dict[str, Any] = {"keys": [[k.field, k.kind] for k in table.keys],
                           "actions": list(table.actions), "default": table.default_action}
    if table.default_args:
        out["default_args"] = list(table.default_args)
    out["size"] = table.size
    return out


def op_to_list(op: Op) -> list:
    return [op.name, *(_to_lists(a) for a in op.args)]


def _stmt_to_dict(stmt: Stmt) -> dict:
    out: dict[str, Any] = {}
    if stmt.table is not None:
        out["apply"] = stmt.table
    if stmt.ops or stmt.table is None:
        out["ops"] = [op_to_list(op) for op in stmt.ops]
    return out


def _to_lists(value: Any) -> Any:
    return [_to_lists(v) for v in value] if isinstance(value, tuple) else value


# -- sections --------------------------------------------------------------------------


def _program(data: Any) -> Program:
    root = _mapping(data, "<root>")
    _keys(root, PROGRAM_KEYS, "", required=("name",))
    return Program(
        name=root["name"],
        headers=tuple(header_from_dict(h, f"headers[{i}]")
                      for i, h in enumerate(_list(root.get("headers"), "headers"))),
        metadata=tuple(Field(n, b) for n, b in
                       _mapping(root.get("metadata"), "metadata", optional=True).items()),
        parser=tuple(state_from_dict(s, f"parser[{i}]")
                     for i, s in enumerate(_list(root.get("parser"), "parser"))),
        maps=_by_name(root.get("maps"), "maps", map_from_dict),
        actions=_by_name(root.get("actions"), "actions", action_from_dict),
        tables=_by_name(root.get("tables"), "tables", table_from_dict),
        control=tuple(_stmt(s, f"control[{i}]")
                      for i, s in enumerate(_list(root.get("control"), "control"))),
    )


def _by_name(data: Any, path: str, make: Callable[[Any, Any, str], Any]) -> tuple:
    section = _mapping(data, path, optional=True)
    return tuple(make(name, value, f"{path}.{name}") for name, value in section.items())


def _stmt(data: Any, path: str) -> Stmt:
    data = _mapping(data, path)
    _keys(data, STMT_KEYS, path)
    if not data:
        _fail(path, "expected {apply: table} or {ops: [...]}")
    return Stmt(data.get("apply"), ops_from_list(data.get("ops"), f"{path}.ops"))


def _cases(data: Any, path: str) -> tuple:
    if isinstance(data, dict):
        return tuple(((value,), target) for value, target in data.items())
    return tuple(_case(c, f"{path}[{i}]") for i, c in enumerate(_list(data, path)))


def _case(data: Any, path: str) -> tuple:
    values, target = _pair(data, path)
    if isinstance(values, list):
        return tuple(values), target
    return (values,), target


def _key(data: Any, path: str) -> Key:
    if isinstance(data, str):
        return Key(data)
    return Key(*_pair(data, path))


def _op(data: Any, path: str) -> Op:
    if isinstance(data, str):
        return Op(data)
    items = _list(data, path)
    if not items:
        _fail(path, "expected [op, arg, ...]")
    for i, arg in enumerate(items[1:], start=1):
        if isinstance(arg, dict):
            _fail(f"{path}[{i}]", "an op argument cannot be a mapping")
    return Op(items[0], tuple(_to_tuples(a) for a in items[1:]))


def _to_tuples(value: Any) -> Any:
    return tuple(_to_tuples(v) for v in value) if isinstance(value, list) else value


# -- structure checks ------------------------------------------------------------------


def _fail(element: str, message: str) -> NoReturn:
    raise ProgramError(element, message)


def _mapping(value: Any, path: str, optional: bool = False) -> dict:
    if value is None and optional:
        return {}
    if not isinstance(value, dict):
        _fail(path, f"expected a mapping, got {_kind(value)}")
    return value


def _list(value: Any, path: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        _fail(path, f"expected a list, got {_kind(value)}")
    return value


def _pair(value: Any, path: str) -> tuple[Any, Any]:
    if not isinstance(value, list) or len(value) != 2:
        _fail(path, f"expected a pair [a, b], got {show(value)}")
    return value[0], value[1]


def _keys(data: dict, allowed: tuple[str, ...], path: str,
          required: tuple[str, ...] = ()) -> None:
    prefix = f"{path}." if path else ""
    for key in data:
        if key not in allowed:
            _fail(f"{prefix}{key}", f"unknown key {show(key)}; allowed: {', '.join(allowed)}")
    for key in required:
        if key not in data:
            _fail(f"{prefix}{key}", "missing")


def _kind(value: Any) -> str:
    return "nothing" if value is None else type(value).__name__
