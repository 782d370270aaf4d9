"""Failover and probe series, from the groups in the snapshot.

Every configured group, member and probe is always there, as 0 when nothing is known (a group
waiting for its interfaces, a member that is absent, a probe not running), so an alert on
``nodenetd_failover_active`` or ``nodenetd_probe_success`` never breaks because a series
vanished. Decisions are counted by the fixed set of reasons the policy gives
(``nodenetd.health.policy.GroupCause``), member transitions by the member causes.
"""

from __future__ import annotations

from nodenetd.failover.group import DETECTION_BUCKETS
from nodenetd.health.member import Cause
from nodenetd.health.policy import GroupCause
from nodenetd.health.probes.prober import RTT_BUCKETS
from nodenetd.metrics.exposition import Family, labels
from nodenetd.metrics.snapshot import Snapshot

__all__ = ["FailoverCollector", "ProbesCollector"]


def _label(value: str) -> str:
    return value.replace(" ", "-")


# Decisions that move (or first set) the active member; STEADY is not a switch.
SWITCH_REASONS = tuple(_label(c.value) for c in GroupCause if c is not GroupCause.STEADY)
TRANSITION_REASONS = tuple(_label(c.value) for c in Cause)
NOTIFY_FRAMES = (("arp", "arp_sent"), ("na", "na_sent"))


class FailoverCollector:
    name = "failover"

    def collect(self, snapshot: Snapshot) -> list[Family]:
        running = Family("nodenetd_failover_group_running", "gauge",
                         "1 when the group runs; 0 while it waits for its interfaces (see the "
                         "log and nodenetctl failover status).")
        members = Family("nodenetd_failover_members", "gauge", "Members of the group.")
        members_healthy = Family("nodenetd_failover_members_healthy", "gauge",
                                 "Members whose link and probes are healthy.")
        active = Family("nodenetd_failover_active", "gauge",
                        "1 for the group's active member (the bond's active slave, or the "
                        "member carrying the group's routes), 0 for the others.")
        healthy = Family("nodenetd_failover_healthy", "gauge",
                         "1 when the member's link is up and its probes pass (before delays "
                         "and damping), else 0.")
        usable = Family("nodenetd_failover_usable", "gauge",
                        "1 when the member may carry traffic now (healthy, past its delays, "
                        "not suppressed), else 0.")
        penalty = Family("nodenetd_failover_damping_penalty", "gauge",
                         "The member's flap-damping figure (decays by half every half_life).")
        suppressed = Family("nodenetd_failover_suppressed", "gauge",
                            "1 while flap damping holds the member out, else 0.")
        flaps = Family("nodenetd_failover_flaps_total", "counter",
                       "Flaps charged to the member's damping (healthy -> unhealthy changes, "
                       "also those the kernel's link-watch coalesced).")
        switches = Family("nodenetd_failovers_total", "counter",
                          "Decisions that changed the active member, by reason: initial, "
                          "failover (the active member failed), failback (preempted by a "
                          "better member), manual, no-usable-member.")
        errors = Family("nodenetd_failover_errors_total", "counter",
                        "Attempts to make a member active that the kernel refused.")
        last = Family("nodenetd_failover_last_timestamp_seconds", "gauge",
                      "When the group's active member last changed.")
        detection = Family("nodenetd_failover_detection_seconds", "histogram",
                           "Failovers: time from the first sign of the active member's failure "
                           "(carrier loss, or the last probe answer) to the decision.")
        transitions = Family("nodenetd_failover_transitions_total", "counter",
                             "Member standing changes in the group, by cause.")
        override = Family("nodenetd_failover_override", "gauge",
                          "1 while an operator's hold or switch is in force, by mode.")
        frames = Family("nodenetd_failover_notifications_total", "counter",
                        "Peer notifications sent after switches: gratuitous ARP (arp) and "
                        "unsolicited neighbour advertisements (na).")
        notify_errors = Family("nodenetd_failover_notification_errors_total", "counter",
                               "Peer notification frames that could not be sent.")
        for group in snapshot.groups:
            g = labels(group=group.name)
            running.add(labels(group=group.name, kind=group.kind), group.running)
            members.add(g, len(group.members))
            members_healthy.add(g, sum(m.healthy for m in group.members))
            for member in group.members:
                m = labels(group=group.name, device=member.name)
                active.add(m, member.active)
                healthy.add(m, member.healthy)
                usable.add(m, member.usable)
                penalty.add(m, member.penalty)
                suppressed.add(m, member.suppressed)
                flaps.add(m, member.flaps)
            for reason in dict.fromkeys([*SWITCH_REASONS, *group.switches]):
                switches.add(labels(group=group.name, reason=reason),
                             group.switches.get(reason, 0))
            for reason in dict.fromkeys([*TRANSITION_REASONS, *group.transitions]):
                transitions.add(labels(group=group.name, reason=reason),
                                group.transitions.get(reason, 0))
            errors.add(g, group.switch_errors)
            if group.last_switch_at is not None:
                last.add(g, group.last_switch_at)
            counts = group.detection_counts or (0,) * (len(DETECTION_BUCKETS) + 1)
            detection.add_histogram(g, DETECTION_BUCKETS, counts, group.detection_sum)
            for mode in ("hold", "switch"):
                override.add(labels(group=group.name, mode=mode), group.override == mode)
            for frame, key in NOTIFY_FRAMES:
                frames.add(labels(group=group.name, frame=frame), group.notify.get(key, 0))
            notify_errors.add(g, group.notify.get("send_errors", 0))
        return [running, members, members_healthy, active, healthy, usable, penalty,
                suppressed, flaps, switches, errors, last, detection, transitions, override,
                frames, notify_errors]


class ProbesCollector:
    name = "probes"

    def collect(self, snapshot: Snapshot) -> list[Family]:
        success = Family("nodenetd_probe_success", "gauge",
                         "1 when the probe target answers through the member (its rise/fall "
                         "verdict is up), else 0.")
        sent = Family("nodenetd_probes_total", "counter", "Probes sent to the target.")
        failed = Family("nodenetd_probes_failed_total", "counter",
                        "Probes that timed out or could not be sent; loss is "
                        "rate(failed) / rate(total).")
        late = Family("nodenetd_probe_late_replies_total", "counter",
                      "Replies that came after their probe's deadline (counted as failed).")
        rtt = Family("nodenetd_probe_rtt_seconds", "histogram",
                     "Round-trip times of answered probes, from the send to the kernel's "
                     "receive timestamp.")
        empty = (0,) * (len(RTT_BUCKETS) + 1)
        for group in snapshot.groups:
            for probe in group.probes:
                key = labels(group=group.name, device=probe.member, kind=probe.kind,
                             target=probe.target)
                counters = probe.counters
                success.add(key, probe.up and counters is not None)
                sent.add(key, counters.sent if counters else 0)
                failed.add(key, counters.failed if counters else 0)
                late.add(key, counters.late if counters else 0)
                counts = (counters.rtt_counts if counters and counters.rtt_counts else empty)
                rtt.add_histogram(key, RTT_BUCKETS, counts,
                                  counters.rtt_sum if counters else 0.0)
        return [success, sent, failed, late, rtt]
