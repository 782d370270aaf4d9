"""Tuning series: profiles and their revisions, applies, per-setting sync, drift, conflicts,
the journal and what restore did. Everything comes from the snapshot (the service's counters
and record); nothing is read from the kernel here.

``nodenetd_setting_in_sync`` is the last plan's verdict per managed setting: every reconcile
(start, events, the sysctl timer, resyncs, reloads) re-plans what it touched and a committed
correction marks its settings in sync again. Settings the kernel or driver cannot take are
not in it; they are counted by ``nodenetd_settings_unsupported``.
"""

from __future__ import annotations

from nodenetd.config.model import INTERFACE_SETTING_KINDS
from nodenetd.metrics.exposition import Family, labels
from nodenetd.metrics.snapshot import Snapshot

__all__ = ["TuningCollector"]

MODES = ("enforce", "observe")


class TuningCollector:
    name = "tuning"

    def __init__(self) -> None:
        self._lines: dict[tuple, str] = {}  # (device, kind, key, state) -> its in-sync line

    def collect(self, snapshot: Snapshot) -> list[Family]:
        record = snapshot.tuning
        daemon = snapshot.daemon
        if record is None:
            raise RuntimeError("no tuning record in the snapshot")
        info = Family("nodenetd_profile_info", "gauge",
                      "The profiles in force, in order, with the first 12 hex digits of their "
                      "file's SHA-256 (failover and overrides: the node config's). Always 1.")
        applies = Family("nodenetd_profile_applies_total", "counter",
                         "Transactions that committed changes asked for by the profile "
                         "(start, hotplug, drift corrections, reloads, nodenetctl apply).")
        failures = Family("nodenetd_profile_apply_failures_total", "counter",
                          "Transactions with changes of the profile that failed and were "
                          "rolled back.")
        last_at = Family("nodenetd_profile_last_apply_timestamp_seconds", "gauge",
                         "When a transaction with changes of the profile last ended.")
        last_ok = Family("nodenetd_profile_last_apply_success", "gauge",
                         "1 when the profile's last transaction committed, 0 when it was "
                         "rolled back.")
        for profile in record.profiles:
            key = labels(profile=profile)
            info.add(labels(profile=profile, revision=record.revisions.get(profile, "")), 1)
            applies.add(key, record.applies.get(profile, 0))
            failures.add(key, record.apply_failures.get(profile, 0))
            if profile in record.last_apply:
                at, ok = record.last_apply[profile]
                last_at.add(key, at)
                last_ok.add(key, ok)

        in_sync = Family("nodenetd_setting_in_sync", "gauge",
                         "1 when the managed setting had its desired value at the last plan "
                         "(or was corrected since), 0 when it drifted or could not be set; "
                         'device="" for node-wide sysctls.')
        unsupported: dict[str, int] = {}
        lines, cache = in_sync.lines, self._lines
        for setting in record.settings:
            state = setting[3]
            if state is None:
                unsupported[setting[1]] = unsupported.get(setting[1], 0) + 1
                continue
            line = cache.get(setting)
            if line is None:
                device, kind, key, _ = setting
                line = cache[setting] = (
                    f"nodenetd_setting_in_sync{labels(kind=kind, device=device or '', setting=key)}"
                    f" {int(state)}\n")
            lines.append(line)
        if len(cache) > 2 * len(record.settings) + 256:  # settings that went away
            self._lines = {}
        skipped = Family("nodenetd_settings_unsupported", "gauge",
                         "Managed settings the kernel or driver cannot take (skipped by the "
                         "last plan), by kind.")
        kinds = list(dict.fromkeys([*INTERFACE_SETTING_KINDS, *unsupported,
                                    *record.corrections]))
        for kind in kinds:
            skipped.add(labels(kind=kind), unsupported.get(kind, 0))

        drift = Family("nodenetd_drift_detected_total", "counter",
                       "Managed settings found changed behind nodenetd's back.")
        drift.add("", daemon.drift_detected)
        corrections = Family("nodenetd_drift_corrections_total", "counter",
                             "Drifted settings put back (daemon.mode enforce), by kind.")
        for kind in kinds:
            corrections.add(labels(kind=kind), record.corrections.get(kind, 0))
        conflicts = Family("nodenetd_drift_conflicts_total", "counter",
                           "Times a setting something else keeps rewriting crossed "
                           "daemon.backoff_corrections and was left alone for a window.")
        conflicts.add("", daemon.conflicts)
        backoffs = Family("nodenetd_drift_backoffs", "gauge",
                          "Settings left alone right now because of a conflict.")
        backoffs.add("", daemon.backoffs)
        check = Family("nodenetd_drift_last_check_timestamp_seconds", "gauge",
                       "When managed settings were last compared with the kernel outside an "
                       "apply (events, the sysctl timer, resyncs).")
        if record.last_drift_check_at is not None:
            check.add("", record.last_drift_check_at)

        mode = Family("nodenetd_tuning_mode", "gauge",
                      "daemon.mode: 1 for the mode in force (enforce corrects drift, observe "
                      "only reports it).")
        for name in MODES:
            mode.add(labels(mode=name), daemon.mode == name)
        paused = Family("nodenetd_tuning_paused", "gauge",
                        "1 after nodenetctl restore: no tuning until the next apply or reload.")
        paused.add("", daemon.paused)
        managed = Family("nodenetd_tuning_interfaces_managed", "gauge",
                         "Interfaces a profile tunes now.")
        managed.add("", len(snapshot.managed))
        hotplug = Family("nodenetd_tuning_hotplug_tuned_total", "counter",
                         "Interfaces tuned when they appeared (or were renamed into a rule).")
        hotplug.add("", daemon.hotplug_tuned)

        originals = Family("nodenetd_journal_originals", "gauge",
                           "Originals in the journal, by setting kind: what restore would put "
                           "back.")
        for kind in dict.fromkeys([*INTERFACE_SETTING_KINDS, *daemon.journal_originals]):
            originals.add(labels(kind=kind), daemon.journal_originals.get(kind, 0))
        pending = Family("nodenetd_journal_pending", "gauge",
                         "1 while the journal holds an unfinished transaction (a crash "
                         "mid-apply that has not been undone yet).")
        pending.add("", daemon.journal_pending)
        restored = Family("nodenetd_restore_restored_total", "counter",
                          "Originals restore put back (nodenetctl restore, and reloads that "
                          "stopped managing a setting).")
        restored.add("", record.restored)
        restore_failed = Family("nodenetd_restore_failures_total", "counter",
                                "Originals restore could not put back.")
        restore_failed.add("", record.restore_failed)
        restore_gone = Family("nodenetd_restore_forgotten_total", "counter",
                              "Originals restore forgot because their interface is gone.")
        restore_gone.add("", record.restore_gone)
        restore_at = Family("nodenetd_restore_last_timestamp_seconds", "gauge",
                            "When restore last ran.")
        if record.last_restore_at is not None:
            restore_at.add("", record.last_restore_at)
        return [info, applies, failures, last_at, last_ok, in_sync, skipped, drift,
                corrections, conflicts, backoffs, check, mode, paused, managed, hotplug,
                originals, pending, restored, restore_failed, restore_gone, restore_at]
