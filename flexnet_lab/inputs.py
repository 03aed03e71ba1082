"""Reading what a user wrote: strict YAML (no duplicate keys, no alias bombs, bounded size)
and short excerpts of values for error messages. Every loader of user files (topologies,
scenarios, deltas, programs) goes through here, so each gets the same guarantees."""
from __future__ import annotations

import re
from typing import Any

import yaml

MAX_FILE_BYTES = 1 << 20          # no input of the lab is near this; bigger is a mistake
MAX_NODES = 200_000               # YAML nodes after alias expansion (a fat-tree k=10 is ~5k)
MAX_FLOW_DEPTH = 32               # [..] / {..} nesting: PyYAML's scanner is quadratic in it
EXCERPT_CHARS = 60


def show(value: Any, limit: int = EXCERPT_CHARS) -> str:
    """A short repr of a user value that never raises and never grows with the value:
    huge ints, deep or aliased structures and odd objects included."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return "a huge integer"
    if isinstance(value, str):
        text = repr(value[: limit + 1])
    elif isinstance(value, (list, tuple, dict, set)):
        text = _short_repr(value, limit)
    else:
        try:
            text = repr(value)
        except Exception:  # a repr may fail on anything; the message must not
            text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _short_repr(value: Any, limit: int) -> str:
    """repr of a container, stopping once `limit` characters are written (an aliased YAML
    structure can be exponentially large when printed in full)."""
    out: list[str] = []
    size = 0

    def emit(s: str) -> bool:
        nonlocal size
        out.append(s)
        size += len(s)
        return size <= limit

    def walk(v: Any, depth: int) -> bool:
        if depth > 20:
            return emit("...")
        if isinstance(v, dict):
            if not emit("{"):
                return False
            for i, (k, x) in enumerate(v.items()):
                if (i and not emit(", ")) or not walk(k, depth + 1) or not emit(": ") \
                        or not walk(x, depth + 1):
                    return False
            return emit("}")
        if isinstance(v, (list, tuple, set)):
            o, c = ("[", "]") if isinstance(v, list) else (("(", ")") if isinstance(v, tuple)
                                                            else ("{", "}"))
            if not emit(o):
                return False
            for i, x in enumerate(v):
                if (i and not emit(", ")) or not walk(x, depth + 1):
                    return False
            return emit(c)
        return emit(show(v, limit))

    walk(value, 0)
    return "".join(out)


def one_line(text: str) -> str:
    """A message on one line (YAML's own errors span several)."""
    return " ".join(str(text).split())


def yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error as one short line: where, and what."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return one_line(f"{where}{problem}")[:200]


class StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses duplicate mapping keys, recursive aliases and documents
    that aliases expand beyond MAX_NODES nodes (an alias bomb is refused before anything
    walks it)."""

    def construct_document(self, node: yaml.Node) -> Any:
        _check_expansion(node)
        return super().construct_document(node)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        self.flatten_mapping(node)
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:       # an unhashable key: PyYAML refuses it below
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping", node.start_mark,
                    f"found duplicate key {show(key)}", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _check_expansion(root: yaml.Node) -> None:
    """Count the nodes of the document as if every alias were copied out; stop at the bound."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise yaml.composer.ComposerError(None, None, "a recursive alias (an anchor used "
                                              "inside itself)", node.start_mark)
        active.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > MAX_NODES:
                raise yaml.composer.ComposerError(
                    None, None, f"aliases expand this document beyond {MAX_NODES} values",
                    node.start_mark)
        active.discard(key)
        sizes[key] = total
        return total

    import sys
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 5000))
    try:
        size(root)
    except RecursionError:
        raise yaml.composer.ComposerError(None, None, "nested too deeply",
                                          root.start_mark) from None
    finally:
        sys.setrecursionlimit(limit)


_QUOTED = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'|#[^\n]*')
_BRACKETS = re.compile(r"[\[\]{}]")


def _check_flow_depth(text: str) -> None:
    """Refuse [..]/{..} nested deeper than MAX_FLOW_DEPTH before PyYAML scans it (quoted
    strings and comments are skipped; the count is approximate, which is enough)."""
    depth = 0
    for ch in _BRACKETS.findall(_QUOTED.sub("", text)):
        depth = depth + 1 if ch in "[{" else max(0, depth - 1)
        if depth > MAX_FLOW_DEPTH:
            raise yaml.YAMLError(f"[..] or {{..}} nested deeper than {MAX_FLOW_DEPTH} levels")


def load_yaml_text(text: str) -> Any:
    """Parse YAML text strictly (StrictLoader); raises yaml.YAMLError."""
    if len(text) > MAX_FILE_BYTES:
        raise yaml.YAMLError(f"larger than {MAX_FILE_BYTES >> 20} MiB")
    _check_flow_depth(text)
    return yaml.load(text, Loader=StrictLoader)  # a SafeLoader subclass


def _read_text(path: str, kind: str, error) -> str:
    """A text file of bounded size; error("<file>", ...) when it cannot be read."""
    import os
    try:
        if os.path.isdir(path):
            raise error("<file>", f"is a directory, not a {kind} file")
        if os.path.getsize(path) > MAX_FILE_BYTES:
            raise error("<file>", f"larger than {MAX_FILE_BYTES >> 20} MiB")
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise error("<file>", f"cannot read: {one_line(getattr(exc, 'strerror', None) or exc)}") \
            from None


def read_yaml_file(path: str, error) -> Any:
    """Read and parse a YAML file strictly; `error(field, message)` makes the exception
    (field "<file>" when it cannot be read, "<yaml>" when it does not parse)."""
    text = _read_text(path, "YAML", error)
    try:
        return load_yaml_text(text)
    except yaml.YAMLError as exc:
        raise error("<yaml>", yaml_problem(exc)) from None
    except RecursionError:
        raise error("<yaml>", "nested too deeply") from None


def read_json_file(path: str, error) -> Any:
    """Read and parse a JSON file strictly (no duplicate keys, bounded size and nesting);
    `error(field, message)` makes the exception ("<file>" when it cannot be read,
    "<json>" when it does not parse, with the line and column)."""
    import json

    def pairs(items):
        seen = {}
        for k, v in items:
            if k in seen:
                raise ValueError(f"duplicate key {show(k)}")
            seen[k] = v
        return seen
    text = _read_text(path, "JSON", error)
    depth = 0
    for ch in _BRACKETS.findall(re.sub(r'"(?:[^"\\\n]|\\.)*"', "", text)):
        depth = depth + 1 if ch in "[{" else max(0, depth - 1)
        if depth > MAX_FLOW_DEPTH:
            raise error("<json>", f"[..] or {{..}} nested deeper than {MAX_FLOW_DEPTH} levels")
    try:
        return json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        raise error("<json>", f"line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except ValueError as exc:
        raise error("<json>", one_line(str(exc))) from None
