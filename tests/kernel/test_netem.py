"""The netem fixture impairs a link for real: ping sees the added delay and the loss.

Later tests build gray failures and QoS on this fixture, so it must be trusted first.
"""

from __future__ import annotations

import pytest

from tests.kernel.ping import ping

pytestmark = [pytest.mark.kernel, pytest.mark.root]


def test_netem_delay_adds_round_trip_time(wire, netem):
    baseline = ping(wire.left, wire.right_addr, count=20, interval=0.01)
    assert baseline.received == baseline.transmitted, "the clean wire must not lose packets"

    netem.apply(wire.left, wire.left_dev, delay_ms=50)
    assert netem.qdisc(wire.left, wire.left_dev)["kind"] == "netem"
    delayed = ping(wire.left, wire.right_addr, count=20, interval=0.01)

    print(f"baseline {baseline}\ndelayed {delayed}")  # shown with -rP: the real margins
    assert delayed.received == delayed.transmitted
    # netem delays each packet at least the configured time; emulated CPUs add jitter on top.
    assert delayed.rtt_min_ms >= 50.0
    added = delayed.rtt_avg_ms - baseline.rtt_avg_ms
    assert 45.0 <= added <= 90.0, f"added RTT {added:.1f} ms (baseline {baseline.rtt_avg_ms} ms)"


def test_netem_loss_drops_about_the_configured_share(wire, netem):
    netem.apply(wire.left, wire.left_dev, loss_pct=30)
    stats = ping(wire.left, wire.right_addr, count=200, interval=0.01, wait_s=1)

    print(stats, f"loss {stats.loss_pct:.1f}%")
    assert stats.transmitted == 200
    # Binomial(200, 0.3): mean 60 lost, sigma 6.5; the band is about 4.6 sigma each side.
    assert 15.0 <= stats.loss_pct <= 45.0, f"{stats.loss_pct:.1f}% lost"


def test_netem_is_removed_at_teardown(wire, netem):
    netem.apply(wire.left, wire.left_dev, delay_ms=20, loss_pct=5)
    netem.clear(wire.left, wire.left_dev)

    assert netem.qdisc(wire.left, wire.left_dev)["kind"] != "netem"
    assert netem.applied == []
