"""YAML loading that remembers where every node came from.

Mappings load as :class:`YDict` and sequences as :class:`YList`: plain ``dict``/``list``
subclasses that also carry the :class:`~nodenetd.errors.SourcePosition` of themselves, of
every key and value (``YDict.key_pos``/``value_pos``) and of every item (``YList.item_pos``).
Scalars are ordinary Python values; their position lives in the parent container.

Rules the loader enforces, so later stages never see them:

- mapping keys are the key's text as written (``on:`` stays the string ``"on"``, ``1:``
  the string ``"1"``), and complex keys are rejected;
- a duplicate key in one mapping is an error naming both lines (YAML merge keys ``<<``
  may still be overridden, as YAML intends);
- a syntax error, an empty file or a top level that is not a mapping is a
  :class:`~nodenetd.errors.ConfigError` with file and line.

libyaml's parser is used when PyYAML has it: it records the same marks (line and column of
every node) as the pure-Python parser, only faster.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from nodenetd.errors import ConfigError, ConfigIssue, SourcePosition

try:  # libyaml keeps start marks (line/column) on every node, like the Python parser
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]

__all__ = [
    "YDict",
    "YList",
    "format_path",
    "load_file",
    "load_text",
    "locate",
    "position_table",
]

PathPart = str | int


class YDict(dict):
    """A YAML mapping that knows the position of itself, of each key and of each value."""

    __slots__ = ("key_pos", "pos", "value_pos")

    def __init__(self, pos: SourcePosition):
        super().__init__()
        self.pos = pos
        self.key_pos: dict[str, SourcePosition] = {}
        self.value_pos: dict[str, SourcePosition] = {}


class YList(list):
    """A YAML sequence that knows the position of itself and of each item."""

    __slots__ = ("item_pos", "pos")

    def __init__(self, pos: SourcePosition):
        super().__init__()
        self.pos = pos
        self.item_pos: list[SourcePosition] = []


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    """SafeLoader building YDict/YList, collecting duplicate-key issues as it goes."""

    def __init__(self, stream: str, filename: str):
        super().__init__(stream)
        self.filename = filename
        self.issues: list[ConfigIssue] = []
        # (mapping, key, first, second): reported after loading, when key paths are known
        self.duplicates: list[tuple[YDict, str, SourcePosition, SourcePosition]] = []

    def duplicate_issues(self, root: Any) -> list[ConfigIssue]:
        paths = _container_paths(root)
        issues = []
        for mapping, key, first, second in self.duplicates:
            issues.append(
                ConfigIssue(
                    second,
                    format_path((*paths.get(id(mapping), ()), key)),
                    f"duplicate key '{key}' (first set at line {first.line})",
                    expected="each key once per mapping",
                    hint=f"keep line {first.line} or line {second.line}, not both",
                )
            )
        return issues

    def _pos(self, node: yaml.Node) -> SourcePosition:
        mark = node.start_mark
        return SourcePosition(self.filename, mark.line + 1, mark.column + 1)

    def construct_ydict(self, node: MappingNode) -> Iterator[YDict]:
        data = YDict(self._pos(node))
        yield data
        own = {id(key) for key, _ in node.value if key.tag != "tag:yaml.org,2002:merge"}
        self.flatten_mapping(node)  # resolves "<<" merge keys; merged entries come first
        from_merge: set[str] = set()
        for key_node, value_node in node.value:
            key_pos = self._pos(key_node)
            if not isinstance(key_node, ScalarNode):
                self.issues.append(
                    ConfigIssue(
                        key_pos,
                        "",
                        "a mapping key must be a plain word",
                        expected="a string key such as 'mtu'",
                    )
                )
                continue
            key = str(key_node.value)
            if key in data and key not in from_merge and id(key_node) in own:
                self.duplicates.append((data, key, data.key_pos[key], key_pos))
            if id(key_node) in own:
                from_merge.discard(key)
            else:
                from_merge.add(key)
            data[key] = self.construct_object(value_node)
            data.key_pos[key] = key_pos
            data.value_pos[key] = self._pos(value_node)

    def construct_ylist(self, node: SequenceNode) -> Iterator[YList]:
        data = YList(self._pos(node))
        yield data
        for item in node.value:
            data.append(self.construct_object(item))
            data.item_pos.append(self._pos(item))


_Loader.add_constructor("tag:yaml.org,2002:map", _Loader.construct_ydict)
_Loader.add_constructor("tag:yaml.org,2002:seq", _Loader.construct_ylist)


def load_text(text: str, filename: str) -> YDict:
    """Parse ``text`` (the contents of ``filename``) into a YDict; raise ConfigError."""
    first = SourcePosition(filename, 1)
    if not text.strip() or all(
        not line.strip() or line.lstrip().startswith("#") for line in text.splitlines()
    ):
        raise ConfigError(
            [ConfigIssue(first, "", "file is empty", expected="a YAML mapping of settings")]
        )
    loader = _Loader(text, filename)
    try:
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_syntax_issue(exc, filename, text)]) from None
    except yaml.YAMLError as exc:  # pragma: no cover - errors without a mark are rare
        raise ConfigError([ConfigIssue(first, "", f"invalid YAML: {exc}")]) from None
    finally:
        loader.dispose()
    issues = loader.issues + loader.duplicate_issues(data)
    if issues:
        raise ConfigError(sorted(issues, key=_issue_order))
    if data is None:
        raise ConfigError(
            [ConfigIssue(first, "", "file is empty", expected="a YAML mapping of settings")]
        )
    if not isinstance(data, YDict):
        raise ConfigError(
            [
                ConfigIssue(
                    first,
                    "",
                    f"the top level is {_kind_of(data)}",
                    expected="a mapping of key: value settings",
                )
            ]
        )
    return data


def load_file(path: str | os.PathLike[str]) -> YDict:
    """Read and parse one YAML file; every failure is a ConfigError naming the file."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            [ConfigIssue(None, name, "file not found", expected="an existing YAML file")]
        ) from None
    except IsADirectoryError:
        raise ConfigError(
            [ConfigIssue(None, name, "is a directory", expected="a YAML file")]
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            [ConfigIssue(None, name, f"not UTF-8 text ({exc.reason} at byte {exc.start})")]
        ) from None
    except OSError as exc:
        raise ConfigError([ConfigIssue(None, name, f"cannot read: {exc.strerror}")]) from None
    return load_text(text, name)


def _syntax_issue(exc: yaml.MarkedYAMLError, filename: str, text: str) -> ConfigIssue:
    mark = exc.problem_mark or exc.context_mark
    pos = SourcePosition(filename, mark.line + 1, mark.column + 1) if mark else None
    problem = exc.problem or exc.context or "cannot parse"
    hint = None
    if exc.context and exc.problem and exc.context_mark is not None:
        hint = f"{exc.context} at line {exc.context_mark.line + 1}"
    lines = text.splitlines()
    if mark and mark.line < len(lines) and "\t" in lines[mark.line][: mark.column + 1]:
        hint = "indent with spaces; YAML does not allow tabs"
    return ConfigIssue(pos, "", f"invalid YAML: {problem}", hint=hint)


def _issue_order(issue: ConfigIssue) -> tuple[str, int, int]:
    pos = issue.position
    return (pos.file, pos.line, pos.column) if pos else ("", 0, 0)


def _kind_of(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return f"a {type(value).__name__}"


def _container_paths(root: Any) -> dict[int, tuple[PathPart, ...]]:
    """id() of every mapping/list in the document -> its key path."""
    found: dict[int, tuple[PathPart, ...]] = {}

    def walk(node: Any, path: tuple[PathPart, ...]) -> None:
        if id(node) in found:  # a YAML alias: already walked
            return
        if isinstance(node, dict):
            found[id(node)] = path
            for key, value in node.items():
                walk(value, (*path, key))
        elif isinstance(node, list):
            found[id(node)] = path
            for index, value in enumerate(node):
                walk(value, (*path, index))

    walk(root, ())
    return found


def format_path(parts: Iterable[PathPart]) -> str:
    """``("interfaces", 0, "features", "gro")`` -> ``interfaces[0].features.gro``."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def locate(root: Any, parts: Iterable[PathPart], *, key: bool = False) -> SourcePosition | None:
    """Position of the node at ``parts`` below ``root``.

    For a mapping entry this is the value's position when the value is a scalar and the
    key's position when it is a collection (or ``key=True``): the line a human looks at.
    A path that leaves the document stops at the deepest existing node.
    """
    node = root
    pos: SourcePosition | None = getattr(root, "pos", None)
    parts = list(parts)
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if isinstance(node, YDict) and isinstance(part, str) and part in node:
            child = node[part]
            if last:
                if key or isinstance(child, YDict | YList):
                    return node.key_pos[part]
                return node.value_pos[part]
            pos, node = node.key_pos[part], child
        elif isinstance(node, YList) and isinstance(part, int) and 0 <= part < len(node):
            pos, node = node.item_pos[part], node[part]
        else:
            return pos
    return pos


def position_table(root: Any, prefix: tuple[PathPart, ...] = ()) -> dict[str, SourcePosition]:
    """Every key path in the document -> where it is (key line for entries, item for items)."""
    table: dict[str, SourcePosition] = {}

    def walk(node: Any, path: tuple[PathPart, ...]) -> None:
        if isinstance(node, YDict):
            for k, v in node.items():
                table[format_path((*path, k))] = node.key_pos[k]
                walk(v, (*path, k))
        elif isinstance(node, YList):
            for i, v in enumerate(node):
                table[format_path((*path, i))] = node.item_pos[i]
                walk(v, (*path, i))

    if isinstance(root, YDict | YList):
        table[format_path(prefix)] = root.pos
    walk(root, prefix)
    return table
