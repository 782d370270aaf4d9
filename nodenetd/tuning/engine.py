"""The pipeline end to end, shared by nodenetctl and the daemon:
config -> desired -> observe -> plan -> transaction, and restore."""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from nodenetd.config.loader import ProfileLibrary, load_node_config
from nodenetd.config.model import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_STATE_DIR,
    NodeConfig,
    ResolvedProfile,
)
from nodenetd.config.resolve import resolve
from nodenetd.errors import ApplyFailed
from nodenetd.tuning.desired import bind
from nodenetd.tuning.journal import Journal
from nodenetd.tuning.lock import MutationLock
from nodenetd.tuning.plan import Plan, Skip
from nodenetd.tuning.planner import plan
from nodenetd.tuning.restore import RestoreReport, restore
from nodenetd.tuning.session import KernelSession
from nodenetd.tuning.transaction import ApplyResult, Transaction, recover

log = logging.getLogger("nodenetd.engine")


@dataclass
class Loaded:
    node: NodeConfig
    resolved: ResolvedProfile

    @property
    def state_dir(self) -> str:
        return self.node.state_dir


def load(config_path: str | None) -> Loaded:
    """Read, validate and resolve the node config and its profiles; raises ConfigError."""
    node = load_node_config(config_path)
    return Loaded(node, resolve(node, ProfileLibrary.for_node(node)))


def peek(config_path: str | None, *keys: str) -> str | None:
    """One value of the node config read leniently (``peek(path, "daemon", "control_socket")``),
    or None: restore and finding the daemon must work even when the config is broken."""
    try:
        value = yaml.safe_load(Path(config_path or DEFAULT_CONFIG_PATH).read_text())
        for key in keys:
            value = value.get(key)
    except (OSError, yaml.YAMLError, AttributeError):
        return None
    return str(value) if isinstance(value, str) else None


def state_dir_for_restore(config_path: str | None) -> str:
    return peek(config_path, "state_dir") or DEFAULT_STATE_DIR


def compute_plan(loaded: Loaded, session: KernelSession) -> Plan:
    return plan(bind(loaded.resolved, session.links()), session)


@dataclass
class ApplyOutcome:
    plan: Plan
    result: ApplyResult = field(default_factory=ApplyResult)
    recovered: bool = False

    @property
    def skipped(self) -> list[Skip]:
        return self.plan.skipped + self.result.skipped


def apply(
    loaded: Loaded, *, strict: bool = False, dry_run: bool = False, locked: bool = False
) -> ApplyOutcome:
    """Plan and apply under the mutation lock; an interrupted earlier apply is undone first.
    ``locked=True`` means the caller (the daemon) already holds the state dir's lock."""
    strict = strict or loaded.node.strict
    with _lock(loaded.state_dir, locked), KernelSession() as session:
        journal = Journal(loaded.state_dir)
        recovered = journal.pending is not None
        problems = recover(session, journal)
        if problems:
            raise ApplyFailed(failed=["could not undo an interrupted apply", *problems])
        if recovered:
            session.invalidate_all()
        desired = bind(loaded.resolved, session.links())
        outcome = ApplyOutcome(plan(desired, session), recovered=recovered)
        if dry_run:
            return outcome
        if strict and outcome.plan.skipped:
            raise ApplyFailed(
                failed=[f"{s.label}: {s.reason} (strict: unsupported settings fail the apply)"
                        for s in outcome.plan.skipped]
            )
        outcome.result = Transaction(session, journal, strict=strict, desired=desired
                                     ).run(outcome.plan.changes)
        return outcome


def restore_state(state_dir: str, *, locked: bool = False) -> RestoreReport:
    """Put back every recorded original under the lock (``locked``: the caller holds it)."""
    with _lock(state_dir, locked), KernelSession() as session:
        return restore(session, Journal(state_dir))


def _lock(state_dir: str, locked: bool) -> AbstractContextManager[object]:
    return nullcontext() if locked else MutationLock(state_dir)


def journal_of(state_dir: str) -> Journal:
    return Journal(state_dir)
