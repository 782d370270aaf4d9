"""Validation of loaded YAML documents: the JSON Schema first, then what a schema cannot say.

Every problem becomes one :class:`~nodenetd.errors.ConfigIssue` naming the file, line, key
path, what was expected and, for a misspelling, the closest valid name. Nothing stops at the
first problem: a document's issues are all collected, sorted by line, and returned.

Who checks what:

- The shipped schemas (``schema/*.json``) check structure: known keys, types, enums,
  ranges (mtu 68..65535, counts >= 1 or ``max``), feature/ring/channel/coalesce names.
- tc QoS (``qdisc:``, ``ingress:``): units, htb shares and classes, DSCP names, filters
  are checked by :mod:`nodenetd.config.qos` and reported here.
- Queue steering (``steering:``): CPU set syntax (:mod:`nodenetd.cpuset`) and flow counts;
  whether the CPUs exist is known only on the node, where the plan skips them with why.
- The semantic checks here own sysctls entirely (key syntax, the ``IF`` placeholder rules,
  value syntax, floors and ceilings, booleans), conflicting feature aliases, and glob sanity.
  The schema's sysctl constraints exist for editors; their raw errors are dropped in favour
  of the clearer messages below.
- Profile references (unknown names, ``extends`` cycles) need the profile search path and
  are checked by :mod:`nodenetd.config.resolve`.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any

import jsonschema
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource

from nodenetd.config import qos, vocabulary
from nodenetd.config.failover import check_failover
from nodenetd.config.metrics import check_metrics
from nodenetd.config.model import SysctlValue
from nodenetd.config.yamlload import YDict, YList, format_path, locate
from nodenetd.cpuset import CpuSet, CpuSetError
from nodenetd.errors import ConfigIssue, SourcePosition

__all__ = [
    "NODE_ONLY_KEYS",
    "NODE_SCHEMA",
    "PROFILE_NAME_RE",
    "PROFILE_SCHEMA",
    "SysctlValueError",
    "did_you_mean",
    "load_schema",
    "parse_sysctl_value",
    "validate_node_document",
    "validate_profile_document",
]

PROFILE_SCHEMA = "profile.schema.json"
NODE_SCHEMA = "node.schema.json"
NODE_ONLY_KEYS = (
    "profiles", "profile_dirs", "state_dir", "strict", "overrides", "daemon", "failover",
    "metrics")

PROFILE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
SYSCTL_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+$")
_PER_IF_GUESS_RE = re.compile(r"^(net\.ipv[46]\.(?:conf|neigh))\.([^.]+)\.(.+)$")
_INT_RE = re.compile(r"^[+-]?\d+$")
_IFNAMSIZ = 15  # the kernel's limit on interface name length (16 with the NUL)
_BIG = 2**31

PathParts = tuple[str | int, ...]


# --------------------------------------------------------------------------- helpers


def did_you_mean(word: object, candidates: Iterable[str]) -> str | None:
    """``"did you mean 'gro'?"`` for the closest candidate, or None."""
    if not isinstance(word, str):
        return None
    pool = list(candidates)
    close = difflib.get_close_matches(word, pool, n=1, cutoff=0.6)
    if not close:
        lowered = {c.lower(): c for c in pool}
        close = [lowered[word.lower()]] if word.lower() in lowered else []
    return f"did you mean '{close[0]}'?" if close else None


def _show(value: Any) -> str:
    """A value as the user wrote it, for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null (an empty value)"
    if isinstance(value, str):
        return f"'{value}'"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return str(value)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if value is None:
        return "null"
    return "unknown"


def _issue(
    pos: SourcePosition | None,
    path: Sequence[str | int],
    message: str,
    expected: str | None = None,
    hint: str | None = None,
) -> ConfigIssue:
    return ConfigIssue(pos, format_path(path), message, expected=expected, hint=hint)


def _sort(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    unique: dict[str, ConfigIssue] = {}
    for issue in issues:
        unique.setdefault(str(issue), issue)

    def order(issue: ConfigIssue) -> tuple[str, int, int]:
        pos = issue.position
        return (pos.file, pos.line, pos.column) if pos else ("", 0, 0)

    return sorted(unique.values(), key=order)


# --------------------------------------------------------------------------- schemas


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """One of the shipped schemas (``profile.schema.json``, ``node.schema.json``)."""
    text = (resources.files("nodenetd.config") / "schema" / name).read_text(encoding="utf-8")
    return json.loads(text)


def _is_strict_integer(_checker: Any, instance: Any) -> bool:
    # JSON Schema counts 9000.0 as an integer; an MTU of 9000.0 in YAML is a typo, not a value.
    return isinstance(instance, int) and not isinstance(instance, bool)


_Validator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", _is_strict_integer
    ),
)


@functools.cache
def _validator(name: str) -> Any:
    registry: Registry = Registry().with_resources(
        (schema, Resource.from_contents(load_schema(schema)))
        for schema in (PROFILE_SCHEMA, NODE_SCHEMA)
    )
    return _Validator(load_schema(name), registry=registry)


def _deref(schema: Any) -> Any:
    """Follow ``$ref`` within the shipped schemas (all ``$defs`` live in the profile schema)."""
    seen = 0
    while isinstance(schema, dict) and "$ref" in schema and seen < 10:
        ref = schema["$ref"]
        doc_name, _, pointer = ref.partition("#")
        doc = load_schema(doc_name or PROFILE_SCHEMA)
        target: Any = doc
        for part in pointer.strip("/").split("/"):
            if part:
                target = target[part]
        schema = target
        seen += 1
    return schema


def _describe(schema: Any) -> str:
    """What a schema accepts, in words: 'an integer from 68 to 65535', "one of: up, down"."""
    schema = _deref(schema)
    if not isinstance(schema, dict):
        return "a valid value"
    if "enum" in schema:
        return "one of: " + ", ".join(str(v) for v in schema["enum"])
    if "const" in schema:
        return f"'{schema['const']}'"
    alternatives = schema.get("anyOf") or schema.get("oneOf")
    if alternatives:
        alts = [_deref(a) for a in alternatives]
        if (
            len(alts) == 2
            and isinstance(alts[1], dict)
            and alts[1].get("type") == "array"
            and _deref(alts[1].get("items")) == alts[0]
        ):
            return f"{_describe(alts[0])}; or a list of them"
        words: list[str] = []
        for alt in alts:
            text = _describe(alt)
            if text not in words:
                words.append(text)
        return " or ".join(words)
    if "title" in schema:
        return schema["title"]
    kind = schema.get("type")
    if isinstance(kind, list):
        return " or ".join(_describe({"type": k}) for k in kind)
    if kind == "integer":
        low, high = schema.get("minimum"), schema.get("maximum")
        if high is not None and high >= _BIG:
            high = None
        if low is not None and high is not None:
            return f"an integer from {low} to {high}"
        if low is not None:
            return f"an integer >= {low}"
        if high is not None:
            return f"an integer <= {high}"
        return "an integer"
    if kind == "boolean":
        return "true or false"
    if kind == "string":
        return "a non-empty string" if schema.get("minLength") else "a string"
    if kind == "array":
        item = _describe(schema["items"]) if "items" in schema else ""
        for article in ("a ", "an "):
            if item.startswith(article) and " or " not in item:
                return f"a list of {item.removeprefix(article)}s"
        return "a list"
    if kind == "object":
        return "a mapping"
    return "a valid value"


def _schema_types(schema: Any) -> set[str] | None:
    """JSON types a schema can accept, or None when it does not say."""
    schema = _deref(schema)
    if not isinstance(schema, dict):
        return None
    if "type" in schema:
        kind = schema["type"]
        types = set(kind) if isinstance(kind, list) else {kind}
        if "integer" in types:
            types.add("number")
        return types
    if "const" in schema:
        return {_json_type(schema["const"])}
    if "enum" in schema:
        return {_json_type(v) for v in schema["enum"]}
    alternatives = schema.get("anyOf") or schema.get("oneOf")
    if alternatives:
        found: set[str] = set()
        for alt in alternatives:
            types = _schema_types(alt)
            if types is None:
                return None
            found |= types
        return found
    return None


def _words_in(schema: Any) -> list[str]:
    """Every string enum/const value a schema (or its list items) accepts."""
    schema = _deref(schema)
    if not isinstance(schema, dict):
        return []
    words = [v for v in schema.get("enum", ()) if isinstance(v, str)]
    if isinstance(schema.get("const"), str):
        words.append(schema["const"])
    for alt in [*schema.get("anyOf", ()), *schema.get("oneOf", ())]:
        words += _words_in(alt)
    if "items" in schema:
        words += _words_in(schema["items"])
    return words


_UNKNOWN_KEY_CONTEXT: dict[str, tuple[str, str | None]] = {
    "features": ("unknown feature", "a kernel feature name or ethtool alias"),
    "coalesce": (
        "unknown coalesce parameter",
        "an ethtool -C parameter such as rx-usecs, tx-frames or adaptive-rx",
    ),
    "rings": ("unknown ring parameter", None),
    "channels": ("unknown channel type", None),
    "match": ("unknown selector field", None),
    "overrides": ("unknown key in overrides", None),
    "daemon": (
        "unknown daemon setting",
        "one of mode, on_stop, sysctl_interval, resync_interval, backoff_corrections, "
        "backoff_window, control_socket, log_level",
    ),
}


def _unknown_key_words(path: PathParts) -> tuple[str, str | None]:
    if not path:
        return "unknown key", None
    last = path[-1]
    if isinstance(last, int):
        if path[0] == "failover":
            what = {"groups": "failover group", "members": "failover member",
                    "probes": "probe"}.get(str(path[-2]), "failover entry")
            return f"unknown key in {what}", None
        return "unknown key in interface rule", None
    in_rule = len(path) >= 3 and isinstance(path[-2], int)
    if last in ("features", "coalesce", "rings", "channels", "match") and in_rule:
        return _UNKNOWN_KEY_CONTEXT[last]
    if last in ("overrides", "daemon") and len(path) == 1:
        return _UNKNOWN_KEY_CONTEXT[last]
    return "unknown key", None


def _translate(error: ValidationError, doc: YDict) -> list[ConfigIssue]:
    """One jsonschema error -> the issues a human should read."""
    path: PathParts = tuple(error.absolute_path)
    instance = error.instance
    kind = error.validator

    if kind == "additionalProperties" and isinstance(instance, dict):
        allowed = list(error.schema.get("properties", {}))
        patterns = [re.compile(p) for p in error.schema.get("patternProperties", {})]
        message, expected = _unknown_key_words(path)
        if expected is None:
            expected = "one of: " + ", ".join(allowed) if allowed else "no keys here"
        issues = []
        for key in instance:
            if key in allowed or any(p.search(key) for p in patterns):
                continue
            hint = did_you_mean(key, allowed)
            if hint is None and not isinstance(key, bool) and str(key).isdigit():
                hint = ('a comma inside {...} starts a new key: quote a list there, as in '
                        'cpus: "0-3,8"')
            if not path and hint is None:
                if key in ("sysctls", "interfaces") and "overrides" in allowed:
                    hint = f"node-local {key} go under overrides:"
                else:
                    hint = _node_key_hint(key)
            issues.append(
                _issue(locate(doc, (*path, key), key=True), (*path, key), message, expected, hint)
            )
        return issues

    if kind == "required" and isinstance(instance, dict):
        properties = error.schema.get("properties", {})
        return [
            _issue(
                locate(doc, path),
                (*path, key),
                "missing required key",
                _describe(properties.get(key, {})),
            )
            for key in error.validator_value
            if key not in instance
        ]

    if kind in ("anyOf", "oneOf"):
        return _translate_alternatives(error, doc)

    pos = locate(doc, path)
    expected = _describe(error.schema)
    if kind in ("enum", "const"):
        words = [
            str(w) for w in (error.validator_value if kind == "enum" else [error.validator_value])
        ]
        return [
            _issue(
                pos,
                path,
                f"invalid value {_show(instance)}",
                expected,
                did_you_mean(instance, words),
            )
        ]
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        return [_issue(pos, path, f"{_show(instance)} is out of range", expected)]
    if kind == "type":
        if isinstance(instance, dict | list) or instance is None:
            return [_issue(pos, path, f"wrong type: {_show(instance)}", expected)]
        return [_issue(pos, path, f"invalid value {_show(instance)}", expected)]
    if kind in ("minItems", "minLength", "minProperties"):
        return [_issue(pos, path, "must not be empty", expected)]
    if kind == "pattern":
        return [_issue(pos, path, f"invalid value {_show(instance)}", expected)]
    return [_issue(pos, path, error.message, expected)]


def _translate_alternatives(error: ValidationError, doc: YDict) -> list[ConfigIssue]:
    path: PathParts = tuple(error.absolute_path)
    instance = error.instance
    alternatives = error.validator_value
    actual = _json_type(instance)
    fitting = [
        index
        for index, alt in enumerate(alternatives)
        if (types := _schema_types(alt)) is None or actual in types
    ]
    if len(fitting) == 1 and actual in ("object", "array"):
        index = fitting[0]
        issues: list[ConfigIssue] = []
        for sub in error.context or ():
            if sub.relative_schema_path and sub.relative_schema_path[0] == index:
                issues += _translate(sub, doc)
        if issues:
            return issues
    pos = locate(doc, path)
    expected = _describe(error.schema)
    hint = did_you_mean(instance, _words_in(error.schema)) if isinstance(instance, str) else None
    if isinstance(instance, dict | list) or instance is None:
        return [_issue(pos, path, f"wrong type: {_show(instance)}", expected, hint)]
    return [_issue(pos, path, f"invalid value {_show(instance)}", expected, hint)]


def _node_key_hint(key: str) -> str | None:
    hint = did_you_mean(key, NODE_ONLY_KEYS)
    return f"{hint} (that key belongs in a node config)" if hint else None


def _schema_issues(name: str, doc: YDict, owned: set[PathParts]) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    for error in _validator(name).iter_errors(doc):
        path = tuple(error.absolute_path)
        if path[:-1] in owned or (path in owned and "propertyNames" in error.schema_path):
            continue  # sysctl keys and values get the semantic checks' clearer messages
        issues += _translate(error, doc)
    return issues


# --------------------------------------------------------------------------- sysctls


class SysctlValueError(ValueError):
    """A sysctl value that cannot be written: what is wrong, what would be right, a hint."""

    def __init__(self, message: str, expected: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.expected = expected
        self.hint = hint


_SYSCTL_EXPECTED = 'an integer or a string such as "1", "4096 131072 16777216", "bbr", ">=4096"'


MODES = ("enforce", "floor", "ceiling", "observe")
_MODE_EXPECTED = ("{enforce: VALUE}, {floor: N}, {ceiling: N} or {observe: VALUE}, "
                  "optionally with override: OWNER")


def split_managed(raw: object) -> tuple[object, bool, str | None]:
    """A sysctl value in its mapping form -> (the plain value, observe, override).

    ``{floor: 4096}`` is ``">=4096"``, ``{ceiling: 600}`` is ``"<=600"``, ``{enforce: 1}`` is
    ``1``, ``{observe: 1}`` reports a difference but never writes; ``override: OWNER`` takes a
    key over from its owner (kube-proxy, cni, cni-bandwidth-manager, systemd-sysctl). A
    plain value passes through unchanged. Raises SysctlValueError.
    """
    if not isinstance(raw, dict):
        return raw, False, None
    modes = [key for key in raw if key in MODES]
    unknown = [key for key in raw if key not in (*MODES, "override")]
    if unknown:
        raise SysctlValueError(f"unknown key '{unknown[0]}' in a sysctl value", _MODE_EXPECTED,
                               did_you_mean(unknown[0], (*MODES, "override")))
    if len(modes) != 1:
        found = ", ".join(modes) if modes else "none"
        raise SysctlValueError(f"a sysctl value takes exactly one mode (found {found})",
                               _MODE_EXPECTED)
    override = raw.get("override")
    if override is not None and not (isinstance(override, str) and override):
        raise SysctlValueError(f"override must name an owner, not {_show(override)}",
                               "override: kube-proxy (or cni, cni-bandwidth-manager, "
                               "systemd-sysctl)")
    mode = modes[0]
    value = raw[mode]
    if mode in ("floor", "ceiling"):
        if isinstance(value, str) and value.strip()[:2] in (">=", "<="):
            raise SysctlValueError(f"{mode} takes the number alone, not {_show(value)}",
                                   f"{{{mode}: 4096}}")
        value = (">=" if mode == "floor" else "<=") + (
            str(value) if not isinstance(value, bool) else "true")
    return value, mode == "observe", override


def parse_sysctl_value(raw: object) -> SysctlValue:
    """A profile's sysctl value -> SysctlValue; raises SysctlValueError.

    ``1`` and ``"1"`` are exact; ``"4096 131072 16777216"`` has three fields; ``"bbr"`` is
    text; a leading ``>=`` (floor: only raise) or ``<=`` (ceiling: only lower) applies to
    every field, and then every field must be an integer.
    """
    if isinstance(raw, bool):
        raise SysctlValueError(
            f"{_show(raw)} is a boolean, not a sysctl value", _SYSCTL_EXPECTED, "write 0 or 1"
        )
    if isinstance(raw, int):
        return SysctlValue("=", (raw,))
    if isinstance(raw, list):
        raise SysctlValueError(
            "a list is not a sysctl value",
            _SYSCTL_EXPECTED,
            'write several fields as one string: "4096 131072 16777216"',
        )
    if raw is None:
        raise SysctlValueError("missing value", _SYSCTL_EXPECTED)
    if not isinstance(raw, str):
        hint = f'quote it: "{raw}"' if isinstance(raw, float) else None
        raise SysctlValueError(f"invalid value {_show(raw)}", _SYSCTL_EXPECTED, hint)
    text = raw.strip()
    op = "="
    if text[:2] in (">=", "<="):
        op, text = text[:2], text[2:].strip()
    elif text[:1] in (">", "<", "=") or text[:2] in ("=>", "=<"):
        guess = ">=" if ">" in text[:2] else "<=" if "<" in text[:2] else None
        raise SysctlValueError(
            f"unknown operator in {_show(raw)}",
            "'>=' (floor) or '<=' (ceiling) before the number, or no operator",
            f"did you mean '{guess}'?" if guess else "drop the '='",
        )
    fields = text.split()
    if not fields:
        raise SysctlValueError(
            "empty value" if op == "=" else f"'{op}' without a number", _SYSCTL_EXPECTED
        )
    if op != "=":
        text_fields = [f for f in fields if not _INT_RE.match(f)]
        if text_fields:
            what = "a floor (>=)" if op == ">=" else "a ceiling (<=)"
            raise SysctlValueError(
                f"{what} needs integer fields, but '{text_fields[0]}' is not an integer",
                'integers after the operator, e.g. ">=4096" or ">=4096 16384 16777216"',
                "write text values (like bbr) without an operator",
            )
    return SysctlValue(op, tuple(int(f) if _INT_RE.match(f) else f for f in fields))  # type: ignore[arg-type]


def _check_sysctls(
    mapping: YDict, path: PathParts, *, per_interface: bool, issues: list[ConfigIssue]
) -> None:
    prefixes = vocabulary.PER_INTERFACE_SYSCTL_PREFIXES
    for key, value in mapping.items():
        key_path = (*path, key)
        key_pos = mapping.key_pos[key]
        segments = key.split(".")
        if "/" in key:
            dotted = key.removeprefix("/proc/sys/").strip("/").replace("/", ".")
            issues.append(
                _issue(
                    key_pos,
                    key_path,
                    "sysctl keys use dots, not slashes",
                    "a dotted key such as net.ipv4.ip_forward",
                    f"write '{dotted}'",
                )
            )
        elif not SYSCTL_KEY_RE.match(key):
            issues.append(
                _issue(
                    key_pos,
                    key_path,
                    "invalid sysctl key",
                    "dot-separated words of letters, digits, '_' or '-', "
                    "at least two (net.core.somaxconn)",
                )
            )
        elif not per_interface and "IF" in segments:
            issues.append(
                _issue(
                    key_pos,
                    key_path,
                    "the IF placeholder only works in an interface rule",
                    "a key without IF here; IF stands for each interface a rule matches",
                    "move it to the sysctls: of an interfaces: rule",
                )
            )
        elif per_interface and f"{key}." in prefixes:
            issues.append(
                _issue(
                    key_pos,
                    key_path,
                    "missing the setting after IF",
                    f"a key such as {key}.{'rp_filter' if '.conf.' in key else 'gc_stale_time'}",
                )
            )
        elif per_interface and not key.startswith(prefixes):
            guess = _PER_IF_GUESS_RE.match(key)
            if "IF" not in segments and guess and guess.group(2) != "IF":
                hint = f"did you mean '{guess.group(1)}.IF.{guess.group(3)}'?"
                message = "per-interface sysctl keys must use the IF placeholder"
            else:
                hint = "set other sysctls in the profile's top-level sysctls:"
                message = "not a per-interface sysctl"
            expected = "a key starting with " + " or ".join(prefixes)
            issues.append(_issue(key_pos, key_path, message, expected, hint))
        try:
            parse_sysctl_value(split_managed(value)[0])
        except SysctlValueError as exc:
            pos = mapping.key_pos[key] if isinstance(value, dict | list) else mapping.value_pos[key]
            issues.append(_issue(pos, key_path, exc.message, exc.expected, exc.hint))


# --------------------------------------------------------------------------- rules


def _glob_problem(pattern: str, *, field: str) -> tuple[str, str] | None:
    """Why a selector glob can never match, or None."""
    if not pattern:
        return "empty pattern", "a name or glob such as eth*"
    depth = 0
    for char in pattern:
        if char == "[":
            depth = 1
        elif char == "]":
            depth = 0
    if depth:
        return f"unclosed '[' in {_show(pattern)}", "a closed character class such as eth[0-3]"
    if field in ("name", "exclude"):
        if "/" in pattern or any(c.isspace() for c in pattern):
            return (
                f"{_show(pattern)} can never match",
                "an interface name glob: no '/' and no spaces",
            )
        if not any(c in pattern for c in "*?[") and len(pattern) > _IFNAMSIZ:
            return (
                f"{_show(pattern)} is longer than an interface name can be",
                f"at most {_IFNAMSIZ} characters",
            )
    if field == "mac" and not re.fullmatch(r"[0-9A-Fa-f:*?\[\]!-]+", pattern):
        return f"{_show(pattern)} is not a MAC address glob", "a glob such as aa:bb:cc:*"
    if field == "driver" and any(c.isspace() or c == "/" for c in pattern):
        return f"{_show(pattern)} is not a driver name", "a driver name such as ixgbe"
    return None


def _check_selector(match: YDict, path: PathParts, issues: list[ConfigIssue]) -> None:
    for field in ("name", "exclude", "driver", "mac"):
        value = match.get(field)
        if isinstance(value, str):
            entries = [((*path, field), value, match.value_pos[field])]
        elif isinstance(value, YList):
            entries = [
                ((*path, field, i), item, value.item_pos[i])
                for i, item in enumerate(value)
                if isinstance(item, str)
            ]
        else:
            continue
        for entry_path, pattern, pos in entries:
            problem = _glob_problem(pattern, field=field)
            if problem:
                issues.append(_issue(pos, entry_path, problem[0], problem[1]))
    udev = match.get("udev")
    if isinstance(udev, YDict):
        for key, value in udev.items():
            if isinstance(value, str):
                problem = _glob_problem(value, field="udev")
                if problem:
                    issues.append(_issue(udev.value_pos[key], (*path, "udev", key), *problem))


def _check_features(features: YDict, path: PathParts, issues: list[ConfigIssue]) -> None:
    """The same kernel feature asked for twice with different values (alias + kernel name)."""
    seen: dict[str, tuple[str, bool]] = {}
    for key, value in features.items():
        if key not in vocabulary.FEATURE_NAMES or not isinstance(value, bool):
            continue
        clashes: dict[str, list[str]] = {}
        for kernel in vocabulary.expand_feature(key):
            if kernel in seen and seen[kernel][1] != value:
                clashes.setdefault(seen[kernel][0], []).append(kernel)
        for other, kernels in clashes.items():
            other_line = features.key_pos[other].line
            issues.append(
                _issue(
                    features.key_pos[key],
                    (*path, key),
                    f"conflicts with '{other}: {_show(features[other])}' at line {other_line}",
                    f"one value per feature; both set {', '.join(kernels)}",
                    f"remove '{other}' or '{key}'",
                )
            )
        for kernel in vocabulary.expand_feature(key):
            seen.setdefault(kernel, (key, value))


def _check_body(body: YDict, prefix: PathParts, issues: list[ConfigIssue]) -> set[PathParts]:
    """Semantic checks of a profile body (sysctls, interfaces); returns the sysctl mapping
    paths it owns so the schema's raw errors there can be dropped."""
    owned: set[PathParts] = set()
    sysctls = body.get("sysctls")
    if isinstance(sysctls, YDict):
        owned.add((*prefix, "sysctls"))
        _check_sysctls(sysctls, (*prefix, "sysctls"), per_interface=False, issues=issues)
    rules = body.get("interfaces")
    if not isinstance(rules, YList):
        return owned
    for index, rule in enumerate(rules):
        if not isinstance(rule, YDict):
            continue
        path = (*prefix, "interfaces", index)
        if isinstance(rule.get("match"), YDict):
            _check_selector(rule["match"], (*path, "match"), issues)
        if isinstance(rule.get("features"), YDict):
            _check_features(rule["features"], (*path, "features"), issues)
        if isinstance(rule.get("sysctls"), YDict):
            owned.add((*path, "sysctls"))
            _check_sysctls(rule["sysctls"], (*path, "sysctls"), per_interface=True, issues=issues)
        if isinstance(rule.get("steering"), YDict):
            _check_steering(rule["steering"], (*path, "steering"), issues)
        for key, check in (("qdisc", qos.check_qdisc), ("ingress", qos.check_ingress)):
            if key in rule:
                for found in check(rule[key]):
                    where = (key, *found.path)
                    issues.append(_issue(locate(rule, where, key=found.key), (*path, *where),
                                         found.message, found.expected, found.hint))
    return owned


_CPUSET_EXPECTED = "CPU numbers and ranges such as 0-3,8, or all, numa-local, none"


def _check_steering(steering: YDict, path: PathParts, issues: list[ConfigIssue]) -> None:
    """CPU sets that do not parse, interrupts without CPUs, a flow count the kernel refuses.
    (Whether the CPUs exist is known only on the node: the plan skips those with a reason.)"""
    for part in ("rps", "xps", "irq_affinity"):
        raw = steering.get(part)
        holder, key, where = ((raw, "cpus", (*path, part, "cpus")) if isinstance(raw, YDict)
                              else (steering, part, (*path, part)))
        value = holder.get(key)
        if isinstance(value, bool) or not isinstance(value, str | int) or (
                isinstance(value, int) and value < 0):
            continue  # missing, or of a type the schema reports
        try:
            cpus = CpuSet.parse(value)
        except CpuSetError as exc:
            issues.append(_issue(holder.value_pos[key], where,
                                 f"invalid CPU set {_show(value)}: {exc}", _CPUSET_EXPECTED))
            continue
        if part == "irq_affinity" and cpus.word == "none":
            issues.append(_issue(holder.value_pos[key], where,
                                 "interrupts need at least one CPU",
                                 "a CPU set other than none",
                                 "to leave interrupt affinity alone, remove irq_affinity"))
    rps = steering.get("rps")
    if isinstance(rps, YDict) and rps.get("flow_count") == 1 and \
            not isinstance(rps.get("flow_count"), bool):
        issues.append(_issue(rps.value_pos["flow_count"], (*path, "rps", "flow_count"),
                             "the kernel refuses a flow table of 1 entry",
                             "0 (off), auto, or at least 2 (rounded up to a power of two)",
                             "scaling.rst: rps_sock_flow_entries / number of RX queues, "
                             "e.g. 2048 for 16 queues"))


# --------------------------------------------------------------------------- entry points


def validate_profile_document(doc: YDict) -> list[ConfigIssue]:
    """Every schema and semantic issue of one profile document (empty list: valid)."""
    issues: list[ConfigIssue] = []
    owned = _check_body(doc, (), issues)
    issues += _schema_issues(PROFILE_SCHEMA, doc, owned)
    return _sort(issues)


def validate_node_document(doc: YDict) -> list[ConfigIssue]:
    """Every schema and semantic issue of one node config document (empty list: valid)."""
    issues: list[ConfigIssue] = []
    owned: set[PathParts] = set()
    if isinstance(doc.get("overrides"), YDict):
        owned = _check_body(doc["overrides"], ("overrides",), issues)
    schema_issues = _schema_issues(NODE_SCHEMA, doc, owned)
    issues += schema_issues
    if not any(issue.key_path.startswith("failover") for issue in schema_issues):
        issues += check_failover(doc)
    if not any(issue.key_path.startswith("metrics") for issue in schema_issues):
        issues += check_metrics(doc)
    return _sort(issues)
