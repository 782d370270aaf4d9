"""From YAML files to typed models: profiles, the node config and the profile search path.

Public surface:

- :func:`load_profile` / :func:`load_node_config`: one file -> :class:`Profile` /
  :class:`NodeConfig`, after the schema and semantic checks of :mod:`.validate`.
- :class:`ProfileLibrary`: finds ``NAME.yaml`` in an ordered list of directories (first hit
  wins) and caches what it loaded.
- :func:`builtin_profile_dir`: where the profiles shipped with nodenetd live.
- :func:`validate_files`: what ``nodenetctl validate FILE...`` reports.

Every failure raises :class:`~nodenetd.errors.ConfigError` carrying all issues found.

How a rule becomes :class:`InterfaceRule.settings`: ``mtu``/``txqueuelen``/``state`` go
under ``"link"``; ``features`` keys are expanded to kernel names (``tso`` -> the five TSO
features), each Wanted pointing at the line of the key as written (the alias line);
``channels``/``rings`` values are ints or ``"max"``; ``coalesce`` values bools or ints;
``sysctls`` go under ``"sysctl"`` with the ``IF`` placeholder kept and SysctlValue values.
``qdisc``/``ingress`` go under ``"qdisc"`` as keys ``root``/``ingress``, their values the
JSON trees :mod:`nodenetd.config.qos` builds.
``steering`` becomes kind ``steering`` (``rps_cpus``, ``rps_flow_cnt``, ``xps_cpus``) and kind
``irq_affinity`` (``cpus``), CPU sets as :class:`~nodenetd.cpuset.Placement`.
Only kinds the rule sets are present.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import nodenetd
from nodenetd.config import qos, vocabulary
from nodenetd.config.failover import build_failover
from nodenetd.config.metrics import build_metrics
from nodenetd.config.model import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_PROFILE_DIRS,
    DEFAULT_STATE_DIR,
    DaemonSettings,
    InterfaceRule,
    NodeConfig,
    Origin,
    Profile,
    Selector,
    Wanted,
)
from nodenetd.config.validate import (
    NODE_ONLY_KEYS,
    PROFILE_NAME_RE,
    did_you_mean,
    parse_sysctl_value,
    split_managed,
    validate_node_document,
    validate_profile_document,
)
from nodenetd.config.yamlload import YDict, format_path, load_file, position_table
from nodenetd.cpuset import CpuSet, Placement
from nodenetd.errors import ConfigError, ConfigIssue, SourcePosition

__all__ = [
    "OVERRIDES_PROFILE",
    "ProfileLibrary",
    "builtin_profile_dir",
    "default_search_dirs",
    "load_node_config",
    "load_profile",
    "looks_like_node_config",
    "validate_files",
]

OVERRIDES_PROFILE = "overrides"  # the origin profile name of a node config's overrides
_SYSTEM_PROFILE_DIR = "/usr/share/nodenetd/profiles"
_PROFILE_KEYS = ("description", "extends", "sysctls", "interfaces")
_BUILD_ORDER = ("link", "features", "channels", "rings", "coalesce", "qdisc", "sysctl",
                "steering", "irq_affinity")


def builtin_profile_dir() -> Path:
    """The shipped profiles: the source tree's ``profiles/`` when running from a checkout,
    else ``/usr/share/nodenetd/profiles``."""
    in_tree = Path(nodenetd.__file__).resolve().parent.parent / "profiles"
    return in_tree if in_tree.is_dir() else Path(_SYSTEM_PROFILE_DIR)


def default_search_dirs() -> tuple[Path, ...]:
    """The profile search path without a node config: /etc's profiles.d, then built-ins."""
    return (*(Path(d) for d in DEFAULT_PROFILE_DIRS), builtin_profile_dir())


# --------------------------------------------------------------------------- the library


class ProfileLibrary:
    """Profiles by name from an ordered list of directories: ``NAME.yaml`` in the first
    directory that has one wins, so /etc/nodenetd/profiles.d shadows the built-ins.

    Loaded profiles (and their load errors) are cached for the library's lifetime.
    """

    def __init__(self, dirs: Iterable[str | os.PathLike[str]]):
        unique: dict[Path, None] = {}
        for directory in dirs:
            unique.setdefault(Path(directory), None)
        self.dirs: tuple[Path, ...] = tuple(unique)
        self._cache: dict[str, Profile | ConfigError] = {}

    @classmethod
    def for_node(cls, node: NodeConfig) -> ProfileLibrary:
        """The node's profile_dirs, then the built-in directory (always searched last)."""
        return cls([*node.profile_dirs, builtin_profile_dir()])

    def __repr__(self) -> str:
        return f"ProfileLibrary({[str(d) for d in self.dirs]!r})"

    def find(self, name: str) -> Path | None:
        """The file profile ``name`` resolves to, or None."""
        if not PROFILE_NAME_RE.match(name):
            return None
        for directory in self.dirs:
            candidate = directory / f"{name}.yaml"
            if candidate.is_file():
                return candidate
        return None

    def names(self) -> list[str]:
        """Every profile name available, sorted."""
        found: set[str] = set(self._cache)
        for directory in self.dirs:
            if directory.is_dir():
                found.update(
                    p.stem for p in directory.glob("*.yaml") if PROFILE_NAME_RE.match(p.stem)
                )
        return sorted(found)

    def add(self, profile: Profile) -> None:
        """Make ``profile`` the one its name resolves to (e.g. a file given on the command
        line that is not in a search directory)."""
        self._cache[profile.name] = profile

    def load(
        self,
        name: str,
        *,
        referenced_at: SourcePosition | None = None,
        key_path: str = "",
    ) -> Profile:
        """The profile called ``name``; raises ConfigError if it is unknown (the issue points
        at ``referenced_at``/``key_path``, where the name was written) or invalid."""
        cached = self._cache.get(name)
        if isinstance(cached, ConfigError):
            raise cached
        if cached is not None:
            return cached
        path = self.find(name)
        if path is None:
            raise ConfigError([self.unknown_issue(name, referenced_at, key_path)])
        try:
            profile = load_profile(path)
        except ConfigError as exc:
            self._cache[name] = exc
            raise
        self._cache[name] = profile
        return profile

    def unknown_issue(
        self, name: str, referenced_at: SourcePosition | None, key_path: str
    ) -> ConfigIssue:
        searched = ", ".join(str(d) for d in self.dirs) or "(no directories)"
        return ConfigIssue(
            referenced_at,
            key_path,
            f"unknown profile '{name}'",
            expected=f"a {name}.yaml in {searched}",
            hint=did_you_mean(name, self.names()),
        )


# --------------------------------------------------------------------------- profiles


def load_profile(path: str | os.PathLike[str]) -> Profile:
    """Load and validate one profile file; its name is the file stem.

    ``extends`` names are not looked up here (that needs a library; see
    :func:`nodenetd.config.resolve.resolve_profiles`). Raises ConfigError.
    """
    doc = load_file(path)
    issues = validate_profile_document(doc)
    if issues:
        raise ConfigError(issues)
    return _build_profile(doc, str(path))


def _build_profile(doc: YDict, file: str) -> Profile:
    name = Path(file).stem
    sysctls, rules = _build_body(doc, name, file)
    return Profile(
        name=name,
        path=file,
        description=doc.get("description", ""),
        extends=_as_tuple(doc.get("extends")),
        sysctls=sysctls,
        rules=rules,
        positions=position_table(doc),
    )


def _build_body(
    body: YDict, profile: str, file: str, prefix: tuple[str, ...] = ()
) -> tuple[dict[str, Wanted], list[InterfaceRule]]:
    """The sysctls and rules of a validated profile body (a profile or node overrides)."""
    sysctls: dict[str, Wanted] = {}
    raw_sysctls = body.get("sysctls") or {}
    for key, value in raw_sysctls.items():
        origin = Origin(profile, None, raw_sysctls.key_pos[key])
        sysctls[key] = _sysctl_wanted(value, origin)
    rules = [
        _build_rule(raw, index, profile, body["interfaces"].item_pos[index], prefix)
        for index, raw in enumerate(body.get("interfaces") or ())
    ]
    return sysctls, rules


def _sysctl_wanted(raw: Any, origin: Origin) -> Wanted:
    value, observe, override = split_managed(raw)
    return Wanted(parse_sysctl_value(value), origin, observe=observe, override=override)


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _build_rule(
    raw: YDict, index: int, profile: str, pos: SourcePosition, prefix: tuple[str, ...]
) -> InterfaceRule:
    name = raw.get("name") or format_path((*prefix, "interfaces", index))
    match = raw.get("match") or {}
    selector = Selector(
        names=_as_tuple(match.get("name")),
        exclude=_as_tuple(match.get("exclude")),
        kinds=_as_tuple(match.get("kind")),
        drivers=_as_tuple(match.get("driver")),
        macs=_as_tuple(match.get("mac")),
        udev=tuple((k, v) for k, v in (match.get("udev") or {}).items()),
    )

    def origin(mapping: YDict, key: str) -> Origin:
        return Origin(profile, name, mapping.key_pos[key])

    settings: dict[str, dict[str, Wanted]] = {kind: {} for kind in _BUILD_ORDER}
    for key in vocabulary.LINK_KEYS:
        if key in raw:
            settings["link"][key] = Wanted(raw[key], origin(raw, key))
    features = raw.get("features") or {}
    for key, value in features.items():
        for kernel in vocabulary.expand_feature(key):
            via = key if vocabulary.is_alias(key) else None
            settings["features"][kernel] = Wanted(bool(value), origin(features, key), via)
    for kind in ("channels", "rings", "coalesce"):
        mapping = raw.get(kind) or {}
        for key, value in mapping.items():
            settings[kind][key] = Wanted(value, origin(mapping, key))
    sysctls = raw.get("sysctls") or {}
    for key, value in sysctls.items():
        settings["sysctl"][key] = _sysctl_wanted(value, origin(sysctls, key))
    _build_steering(raw.get("steering") or {}, settings, origin)
    for key, setting, build in (("qdisc", "root", qos.build_qdisc),
                                ("ingress", "ingress", qos.build_ingress)):
        if key in raw:
            override = raw[key].get("override") if isinstance(raw[key], dict) else None
            settings["qdisc"][setting] = Wanted(build(raw[key]), origin(raw, key),
                                                override=override)
    return InterfaceRule(
        name=name,
        selector=selector,
        settings={kind: keys for kind, keys in settings.items() if keys},
        origin=Origin(profile, name, pos),
    )


_STEERING_KEYS = {  # steering: part -> (kind, key, spread by default)
    "rps": ("steering", "rps_cpus", False),
    "xps": ("steering", "xps_cpus", True),
    "irq_affinity": ("irq_affinity", "cpus", True),
}


def _build_steering(steering: YDict, settings: dict[str, dict[str, Wanted]], origin) -> None:
    """``steering:`` -> kind ``steering`` (rps_cpus, rps_flow_cnt, xps_cpus) and kind
    ``irq_affinity`` (cpus), each a Placement; a bare CPU set stands for ``{cpus: SET}``."""
    for part, (kind, key, spread) in _STEERING_KEYS.items():
        if part not in steering:
            continue
        raw = steering[part]
        mapping = raw if isinstance(raw, dict) else None
        cpus = mapping.get("cpus") if mapping is not None else raw
        if cpus is not None:
            where = origin(mapping, "cpus") if mapping is not None else origin(steering, part)
            placement = Placement(CpuSet.parse(cpus),
                                  bool((mapping or {}).get("spread", spread)))
            settings[kind][key] = Wanted(placement, where,
                                         override=(mapping or {}).get("override"))
        if mapping is not None and "flow_count" in mapping:
            settings["steering"]["rps_flow_cnt"] = Wanted(mapping["flow_count"],
                                                          origin(mapping, "flow_count"))


# --------------------------------------------------------------------------- node config


def load_node_config(path: str | os.PathLike[str] | None = None) -> NodeConfig:
    """Load and validate the node config (``None``: /etc/nodenetd/nodenetd.yaml).

    Relative ``profile_dirs`` are relative to the config file's directory. The profiles
    themselves are not loaded here (see :func:`nodenetd.config.resolve.resolve`).
    Raises ConfigError, including when the default file does not exist.
    """
    if path is None:
        default = Path(DEFAULT_CONFIG_PATH)
        if not default.exists():
            raise ConfigError(
                [
                    ConfigIssue(
                        None,
                        str(default),
                        "no config: the file does not exist",
                        expected="a node config such as 'profiles: [kubernetes-node]'",
                        hint=f"create {default}, or pass --config FILE",
                    )
                ]
            )
        path = default
    file = str(path)
    doc = load_file(path)
    issues = validate_node_document(doc)
    if issues:
        raise ConfigError(issues)
    return _build_node(doc, file)


def _profile_dirs(doc: YDict, file: str) -> tuple[str, ...]:
    dirs = doc.get("profile_dirs")
    if dirs is None:
        return DEFAULT_PROFILE_DIRS
    base = Path(file).parent
    return tuple(str(base / directory) for directory in dirs)


def _build_node(doc: YDict, file: str) -> NodeConfig:
    positions = position_table(doc)
    overrides = None
    if doc.get("overrides"):
        sysctls, rules = _build_body(doc["overrides"], OVERRIDES_PROFILE, file, ("overrides",))
        overrides = Profile(
            name=OVERRIDES_PROFILE,
            path=file,
            description="node-local overrides",
            sysctls=sysctls,
            rules=rules,
            positions=positions,
        )
    return NodeConfig(
        path=file,
        profiles=_as_tuple(doc["profiles"]),
        profile_dirs=_profile_dirs(doc, file),
        state_dir=doc.get("state_dir", DEFAULT_STATE_DIR),
        overrides=overrides,
        strict=bool(doc.get("strict", False)),
        daemon=DaemonSettings(**dict(doc.get("daemon") or {})),
        failover=build_failover(doc) if doc.get("failover") else None,
        metrics=build_metrics(doc) if doc.get("metrics") else None,
        positions=positions,
    )


# --------------------------------------------------------------------------- validate


def looks_like_node_config(doc: YDict, path: str | os.PathLike[str] | None = None) -> bool:
    """Whether ``doc`` is a node config rather than a profile: it is called nodenetd.yaml,
    or has a node-only key (profiles, state_dir...), or has no profile key either and a key
    closer to a node-only key than to any profile key (``profile: [web]``)."""
    if path is not None and Path(path).name in ("nodenetd.yaml", "nodenetd.yml"):
        return True
    if any(key in NODE_ONLY_KEYS for key in doc):
        return True
    if any(key in _PROFILE_KEYS for key in doc):
        return False
    for key in doc:
        closest = difflib.get_close_matches(key.lower(), NODE_ONLY_KEYS + _PROFILE_KEYS, n=1)
        if closest and closest[0] in NODE_ONLY_KEYS:
            return True
    return False


def validate_files(
    paths: Sequence[str | os.PathLike[str]],
    *,
    search_dirs: Sequence[str | os.PathLike[str]] | None = None,
) -> list[ConfigIssue]:
    """Every issue in the given files, for ``nodenetctl validate FILE...``; empty means valid.

    A node config is checked with the profiles it names (its profile_dirs, then the
    built-ins). A profile is checked with its ``extends`` chain, searched in the profile's
    own directory, then ``search_dirs`` (default :func:`default_search_dirs`).
    Issues are returned, not raised; each appears once.
    """
    from nodenetd.config.resolve import resolve, resolve_profiles  # resolve imports us

    issues: list[ConfigIssue] = []
    for path in paths:
        file = str(path)
        try:
            doc = load_file(path)
        except ConfigError as exc:
            issues += exc.issues
            continue
        if looks_like_node_config(doc, path):
            found = validate_node_document(doc)
            issues += found
            # Profile references are checked even when other keys are wrong.
            if "profiles" not in doc or _touches(found, "profiles", "profile_dirs"):
                continue
            node = _build_node(doc, file) if not found else _node_references(doc, file)
            library = ProfileLibrary.for_node(node)
            try:
                resolve(node, library)
            except ConfigError as exc:
                issues += exc.issues
        else:
            found = validate_profile_document(doc)
            issues += found
            if _touches(found, "extends"):
                continue
            profile = _build_profile(doc, file) if not found else _profile_references(doc, file)
            dirs = default_search_dirs() if search_dirs is None else search_dirs
            library = ProfileLibrary([Path(path).parent, *dirs])
            library.add(profile)
            try:
                resolve_profiles([profile], library)
            except ConfigError as exc:
                issues += exc.issues
    unique: dict[str, ConfigIssue] = {}
    for issue in issues:
        unique.setdefault(str(issue), issue)
    return list(unique.values())


def _touches(issues: list[ConfigIssue], *keys: str) -> bool:
    """Whether any issue is about one of the top-level ``keys``."""
    return any(issue.key_path.split(".")[0].split("[")[0] in keys for issue in issues)


def _node_references(doc: YDict, file: str) -> NodeConfig:
    """Only the profile references of a node config that has issues elsewhere."""
    return NodeConfig(
        path=file,
        profiles=_as_tuple(doc["profiles"]),
        profile_dirs=_profile_dirs(doc, file),
        positions=position_table(doc),
    )


def _profile_references(doc: YDict, file: str) -> Profile:
    """Only the ``extends`` of a profile that has issues elsewhere."""
    return Profile(
        name=Path(file).stem,
        path=file,
        extends=_as_tuple(doc.get("extends")),
        positions=position_table(doc),
    )
