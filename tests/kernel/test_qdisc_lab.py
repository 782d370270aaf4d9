"""The qdiscs the host kernel lacks, on the kernel lab's real kernel: fq, fq_codel, cake and
mq with an fq per TX queue (what Cilium's bandwidth manager builds) applied through
nodenetctl, read back with ``tc -j`` and with nodenetd's own reader, re-planned as a no-op,
changed in place (same handle, statistics kept), and restored to the kernel's default root.

nodenetctl runs in-process in the lab namespace (``Node(in_process=True)``): every new
interpreter costs 10 s or more of imports under emulation.
"""

from __future__ import annotations

import pytest

from nodenetd.kernel.tc import TC_H_ROOT
from tests.lab.tc import qdiscs, reader, root

pytestmark = [pytest.mark.kernel, pytest.mark.root]


def profile(node, qdisc: str) -> None:
    node.write_profile("q", f"interfaces:\n  - match: {{name: [lab0]}}\n    qdisc: {qdisc}\n")
    node.write_config(["q"])


def apply_ok(node) -> None:
    done = node.ctl("apply")
    assert done.returncode == 0, done.stdout + done.stderr


def replan_is_empty(node) -> None:
    plan = node.ctl("plan", "--detailed-exitcode")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "Nothing to change" in plan.stdout


def ours(node, dev: str = "lab0") -> list:
    """nodenetd's reader: the qdiscs of DEV, root first."""
    ifindex = node.ns.link(dev)["ifindex"]
    with reader(node) as api:
        found = [q for q in api.dump_qdiscs() if q.ifindex == ifindex]
    return sorted(found, key=lambda q: q.parent != TC_H_ROOT)


def microseconds(value: int | float) -> int:
    """A time from ``tc -j``: microseconds as an integer, or seconds as a number."""
    return value if isinstance(value, int) else round(value * 1_000_000)


def restored_to_default(node) -> None:
    done = node.ctl("restore")
    assert done.returncode == 0, done.stdout + done.stderr
    assert root(node)["handle"] == "0:"  # the kernel's own default root is back
    assert node.journal["originals"] == {}


def test_fq_with_its_main_options(node):
    node.nics(1)
    profile(node, "{fq: {flow_limit: 100, buckets: 1024, horizon: 2s, pacing: true, "
                  "maxrate: 1gbit}}")
    apply_ok(node)

    fq = root(node)
    assert fq["kind"] == "fq" and fq["handle"] != "0:"
    options = fq["options"]
    assert (options["flow_limit"], options["buckets"]) == (100, 1024)
    assert options["horizon"] == 2_000_000 and options["maxrate"] == 125_000_000
    kernel = ours(node)[0]
    assert kernel.kind == "fq"
    assert {k: kernel.options[k] for k in ("flow_limit", "buckets", "horizon", "pacing",
                                           "maxrate")} == {
        "flow_limit": 100, "buckets": 1024, "horizon": 2_000_000, "pacing": True,
        "maxrate": 125_000_000}
    assert node.journal["originals"]["qdisc/lab0/root"]["value"]["default"] is True
    replan_is_empty(node)

    profile(node, "{fq: {flow_limit: 200, buckets: 1024, horizon: 2s, pacing: true, "
                  "maxrate: 1gbit}}")
    apply_ok(node)
    changed = root(node)
    assert changed["options"]["flow_limit"] == 200
    assert changed["handle"] == fq["handle"]  # in place: the same qdisc, never rebuilt
    restored_to_default(node)


def test_fq_codel_keeps_codel_times_in_the_kernels_units(node):
    node.nics(1)
    profile(node, "{fq_codel: {target: 5ms, interval: 100ms, limit: 10240, ecn: true}}")
    apply_ok(node)

    found = root(node)
    assert found["kind"] == "fq_codel"
    assert found["options"]["limit"] == 10240
    assert found["options"]["ecn"] is True
    # The kernel keeps 5 ms as 4882 units of 1.024 us and dumps 4999 us (tc shows that);
    # nodenetd's reader maps a dumped time back to the microseconds that produce it.
    print("tc -j fq_codel options:", found["options"])
    assert microseconds(found["options"]["target"]) == 4999
    kernel = ours(node)[0]
    assert (kernel.options["target"], kernel.options["interval"]) == (5000, 100_000)
    replan_is_empty(node)  # compared in codel units: the re-plan is empty

    profile(node, "{fq_codel: {target: 10ms, interval: 100ms, limit: 10240, ecn: true}}")
    apply_ok(node)
    assert root(node)["handle"] == found["handle"]
    assert microseconds(root(node)["options"]["target"]) == 9999
    assert ours(node)[0].options["target"] == 10_000
    restored_to_default(node)


def test_cake_with_a_bandwidth_and_diffserv4(node):
    node.nics(1)
    profile(node, "{cake: {bandwidth: 100mbit, diffserv: diffserv4, nat: true}}")
    apply_ok(node)

    cake = root(node)
    assert cake["kind"] == "cake"
    assert cake["options"]["bandwidth"] == 12_500_000 and cake["options"]["diffserv"] == \
        "diffserv4"
    kernel = ours(node)[0]
    assert (kernel.options["bandwidth"], kernel.options["diffserv"], kernel.options["nat"]) \
        == (12_500_000, "diffserv4", True)
    replan_is_empty(node)

    profile(node, "{cake: {bandwidth: 50mbit, diffserv: diffserv4, nat: true}}")
    apply_ok(node)
    assert root(node)["options"]["bandwidth"] == 6_250_000
    assert root(node)["handle"] == cake["handle"]
    restored_to_default(node)


def test_mq_with_an_fq_per_tx_queue_follows_the_channel_count(node):
    """What a bandwidth manager builds: mq at the root, one fq per TX queue. Raising the
    channel count in the same profile gives the new queues their fq too."""
    node.nics(1, queues=4)
    node.ns.run("ethtool", "-L", "lab0", "tx", "2", "rx", "2")
    node.write_profile("q", """\
interfaces:
  - match: {name: [lab0]}
    channels: {tx: 4, rx: 4}
    qdisc: {mq: {child: {fq: {horizon: 2s, flow_limit: 50}}}}
""")
    node.write_config(["q"])
    apply_ok(node)

    found = qdiscs(node)
    mq = next(q for q in found if q.get("root"))
    children = [q for q in found if not q.get("root")]
    assert mq["kind"] == "mq"
    assert sorted(q["parent"] for q in children) == [f"{mq['handle']}{i}" for i in range(1, 5)]
    assert {(q["kind"], q["options"]["horizon"], q["options"]["flow_limit"])
            for q in children} == {("fq", 2_000_000, 50)}
    kernel = ours(node)
    assert kernel[0].kind == "mq" and sorted(q.kind for q in kernel[1:]) == ["fq"] * 4
    assert node.ns.channels("lab0")["tx"] == "4"
    replan_is_empty(node)

    restored_to_default(node)
    assert node.ns.channels("lab0")["tx"] == "2"
    assert not [q for q in qdiscs(node) if q["kind"] == "fq"]
