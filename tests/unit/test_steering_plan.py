"""Planning queue steering and IRQ affinity against recorded sysfs/procfs trees
(tests/fixtures/steering): the real loader, binding, planner, ownership and kinds; only the
filesystem root is a temporary directory."""

from __future__ import annotations

import textwrap

import pytest

from nodenetd.config.loader import ProfileLibrary, load_profile
from nodenetd.config.resolve import resolve_profiles
from nodenetd.kernel.links import Link
from nodenetd.tuning.desired import bind
from nodenetd.tuning.journal import Journal
from nodenetd.tuning.kinds import KINDS
from nodenetd.tuning.ownership import Ownership
from nodenetd.tuning.plan import Change, Target
from nodenetd.tuning.planner import plan
from nodenetd.tuning.transaction import restore_order
from tests.unit.steering_trees import build


def nic(index: int, name: str) -> Link:
    return Link(index=index, name=name, kind=None, slave_kind=None, master=None, mtu=1500,
                min_mtu=68, max_mtu=9600, txqueuelen=1000, admin_up=True, operstate="UP",
                carrier=True, mac=f"00:1b:21:00:00:0{index}", perm_mac=None, parent_bus="pci")


class TreeSession:
    """What the kinds use of a KernelSession, over a recorded tree."""

    def __init__(self, fs, links):
        self.steering = fs
        self._links = links
        self._cache: dict = {"ownership": Ownership(steering=fs)}

    def cached(self, name, load):
        if name not in self._cache:
            self._cache[name] = load()
        return self._cache[name]

    def invalidate(self, name):
        self._cache.pop(name, None)

    def links(self):
        return self._links


@pytest.fixture
def machine(tmp_path):
    """plan(profile text, driver, ifname) on that driver's recorded tree."""

    runs = iter(range(100))

    def planned(body: str, driver: str = "mlx5", ifname: str = "ens1f0np0", *,
                setup=None, tree: str = "tree.txt"):
        root = tmp_path / f"{driver}-{next(runs)}"  # a fresh machine each time
        fs = build(root, driver, tree)
        if setup:
            setup(root)
        path = tmp_path / "p.yaml"
        path.write_text(textwrap.dedent(body))
        resolved = resolve_profiles([load_profile(path)], ProfileLibrary([tmp_path]))
        session = TreeSession(fs, {ifname: nic(3, ifname)})
        result = plan(bind(resolved, session.links()), session)
        result.session = session  # for tests that apply
        result.root = root
        return result

    return planned


def rule(steering: str, sysctls: str = "") -> str:
    return (f"{sysctls}interfaces:\n  - name: nics\n    match: {{kind: [physical]}}\n"
            f"    steering:\n{textwrap.indent(textwrap.dedent(steering), '      ')}")


def changes(result, kind):
    return {c.key: c.desired for c in result.changes if c.kind == kind}


def irqbalance(root, *args):
    proc = root / "proc" / "812"
    proc.mkdir(parents=True)
    (proc / "comm").write_text("irqbalance\n")
    (proc / "cmdline").write_bytes(b"\0".join([b"/usr/sbin/irqbalance", b"--foreground",
                                               *(a.encode() for a in args)]) + b"\0")


# --- IRQ affinity -----------------------------------------------------------------------------


def test_mlx5_queue_interrupts_spread_one_cpu_each_over_the_nics_numa_node(machine):
    result = machine(rule("irq_affinity: numa-local\n"))
    planned = changes(result, "irq_affinity")
    # 8 channels: comp0..comp7 only (comp8..15 serve no queue), node 1 = CPUs 8-15
    assert planned == {f"{151 + n}:mlx5_comp{n}@pci:0000:3b:00.0": str(8 + n) for n in range(8)}
    assert {c.current for c in result.changes} == {"0-15"}
    assert not result.skipped and not result.owned


def test_without_spread_every_interrupt_gets_the_whole_set(machine):
    result = machine(rule("irq_affinity: {cpus: numa-local, spread: false}\n"))
    assert set(changes(result, "irq_affinity").values()) == {"8-15"}


def test_virtio_rx_and_tx_vectors_of_one_queue_pair_share_a_cpu(machine):
    result = machine(rule("irq_affinity: all\n"), "virtio", "eth0")
    assert changes(result, "irq_affinity") == {"38:virtio2-input.0": "0",
                                               "39:virtio2-output.0": "0"}


def test_interrupts_are_left_to_a_running_irqbalance_with_advice(machine):
    result = machine(rule("irq_affinity: numa-local\n"), setup=irqbalance)
    assert not changes(result, "irq_affinity")
    assert len(result.owned) == 8
    assert all("owned by irqbalance" in s.reason and "override: irqbalance" in s.reason
               for s in result.owned)
    (advice,) = [w.message for w in result.warnings if w.kind == "irq_affinity"]
    assert "irqbalance (pid 812)" in advice
    assert " ".join(f"--banirq={151 + n}" for n in range(8)) in advice
    assert "--banmod=mlx5_core" in advice
    assert "/etc/default/irqbalance" in advice and "/etc/sysconfig/irqbalance" in advice


def test_interrupts_irqbalance_was_told_to_leave_alone_are_ours(machine):
    result = machine(rule("irq_affinity: numa-local\n"),
                     setup=lambda root: irqbalance(root, "--banirq=151", "--banirq=152"))
    assert sorted(changes(result, "irq_affinity")) == ["151:mlx5_comp0@pci:0000:3b:00.0",
                                                       "152:mlx5_comp1@pci:0000:3b:00.0"]
    assert len(result.owned) == 6
    banned_module = machine(rule("irq_affinity: numa-local\n"),
                            setup=lambda root: irqbalance(root, "--banmod=mlx5_core"))
    assert len(changes(banned_module, "irq_affinity")) == 8 and not banned_module.owned


def test_override_writes_them_anyway_and_says_irqbalance_may_move_them(machine):
    result = machine(rule("irq_affinity: {cpus: numa-local, override: irqbalance}\n"),
                     setup=irqbalance)
    assert len(changes(result, "irq_affinity")) == 8 and not result.owned
    assert any("may move the interrupts of ens1f0np0 again" in w.message
               for w in result.warnings)


def test_cpus_the_machine_lacks_are_skipped_once_with_the_reason(machine):
    result = machine(rule("irq_affinity: 12-19\nrps: 12-19\n"))
    reasons = {(s.kind, s.key): s.reason for s in result.skipped}
    assert reasons == {
        ("irq_affinity", "cpus"): "CPUs 16-19 are not online on this machine (online: 0-15)",
        ("steering", "rps_cpus"): "CPUs 16-19 are not online on this machine (online: 0-15)",
    }
    assert not result.changes


def test_interrupts_whose_number_now_belongs_to_another_device_are_never_written(machine):
    result = machine(rule("irq_affinity: numa-local\n"))
    session = result.session
    interrupts = result.root / "proc" / "interrupts"
    interrupts.write_text(interrupts.read_text().replace("mlx5_comp0@pci:0000:3b:00.0",
                                                         "nvme1q3"))
    KINDS["irq_affinity"].refresh(session)
    change = next(c for c in result.changes if c.key.startswith("151:"))
    (error,) = KINDS["irq_affinity"].apply(session, [(change.target, {change.key: "8"})])
    assert "IRQ 151 is no longer mlx5_comp0@pci:0000:3b:00.0" in str(error)
    assert (result.root / "proc/irq/151/smp_affinity_list").read_text() == "0-15\n"


# --- RPS, RFS, XPS ------------------------------------------------------------------------------


def test_rps_and_xps_masks_are_the_kernels_text_for_every_queue(machine):
    result = machine(rule("rps: numa-local\nxps: numa-local\n"))
    planned = changes(result, "steering")
    assert {k: v for k, v in planned.items() if "rps" in k} == {
        f"rx-{q}.rps_cpus": "ff00" for q in range(8)}  # 16 CPUs: 4 hex digits
    # one CPU per TX queue (8 CPUs, 8 queues), queue q on CPU 8+q: its IRQ's CPU
    assert {k: v for k, v in planned.items() if "xps" in k} == {
        f"tx-{q}.xps_cpus": format(1 << (8 + q), "04x") for q in range(8)}
    assert {c.current for c in result.changes} == {"0"}


def test_xps_without_spread_and_with_more_cpus_than_queues(machine):
    whole = machine(rule("xps: {cpus: all, spread: false}\n"), "ixgbe", "eth2")
    assert set(changes(whole, "steering").values()) == {"f"}
    shared = machine(rule("xps: all\n"), "virtio", "eth0")  # 2 CPUs, 1 TX queue
    assert changes(shared, "steering") == {"tx-0.xps_cpus": "3"}


def test_isolated_cpus_are_left_out_of_rps_as_the_kernel_does(machine):
    def isolate(root):
        (root / "sys/devices/system/cpu/isolated").write_text("8-9\n")

    words = machine(rule("rps: numa-local\n"), setup=isolate)
    assert set(changes(words, "steering").values()) == {"fc00"}
    listed = machine(rule("rps: 8-11\n"), setup=isolate)
    (skip,) = listed.skipped
    assert "CPUs 8-9 are isolated" in skip.reason


@pytest.mark.parametrize(
    ("flow", "sysctl", "per_queue"),
    [(4096, "", 4096), (3000, "", 4096), (0, "", 0), (2, "", 2),
     ("auto", "", 4096),  # scaling.rst: 32768 / 8 RX queues
     ("auto", "sysctls:\n  net.core.rps_sock_flow_entries: 65536\n", 8192)],
)
def test_flow_counts_are_the_power_of_two_the_kernel_makes(machine, flow, sysctl, per_queue):
    result = machine(rule(f"rps: {{flow_count: {flow}}}\n", sysctl))
    flows = {k: v for k, v in changes(result, "steering").items() if "flow" in k}
    if per_queue == 0:
        assert not flows and len(result.in_sync) == 8
    else:
        assert flows == {f"rx-{q}.rps_flow_cnt": per_queue for q in range(8)}


def test_a_flow_count_without_the_global_table_is_a_warning(machine):
    result = machine(rule("rps: {cpus: numa-local, flow_count: 4096}\n"))
    (warning,) = [w for w in result.warnings if w.kind == "steering"]
    assert "net.core.rps_sock_flow_entries" in warning.message
    assert "cannot see" in warning.message  # the tree has no /proc/sys: another namespace

    def rfs_off(root):
        (root / "proc/sys/net/core").mkdir(parents=True)
        (root / "proc/sys/net/core/rps_sock_flow_entries").write_text("0\n")

    off = machine(rule("rps: {flow_count: 4096}\n"), setup=rfs_off)
    assert any("add 'net.core.rps_sock_flow_entries: 32768'" in w.message
               for w in off.warnings)
    with_sysctl = machine(rule("rps: {flow_count: 4096}\n",
                               "sysctls:\n  net.core.rps_sock_flow_entries: 32768\n"),
                          setup=rfs_off)
    assert not [w for w in with_sysctl.warnings if w.kind == "steering"]


def test_applied_values_read_back_in_sync(machine):
    result = machine(rule("rps: numa-local\nxps: numa-local\nirq_affinity: numa-local\n"))
    session = result.session
    for kind in ("steering", "irq_affinity"):
        batch = [(c.target, {c.key: c.desired}) for c in result.changes if c.kind == kind]
        assert KINDS[kind].apply(session, batch) == [None] * len(batch)
        KINDS[kind].refresh(session)
    queues = result.root.glob("sys/devices/**/ens1f0np0/queues/rx-5/rps_cpus")
    assert next(queues).read_text() == "ff00"
    assert (result.root / "proc/irq/156/smp_affinity_list").read_text() == "13"
    again = machine(rule("rps: numa-local\n"))  # a fresh tree: nothing carried over
    assert len(again.changes) == 8
    for change in result.changes:
        kind = KINDS[change.kind]
        assert kind.in_sync(kind.current(session, change.target, change.key), change.desired)


# --- journal and order --------------------------------------------------------------------------


def test_queue_settings_are_restored_after_the_channels_that_create_the_queues():
    lab = Target("lab0", 3)
    items = [("channels", lab, "rx", 4), ("steering", lab, "rx-3.rps_cpus", "2"),
             ("link", lab, "mtu", 1500), ("sysctl", Target(), "net.core.somaxconn", "4096"),
             ("irq_affinity", lab, "38:virtio2-input.0", "0-1")]
    items.append(("qdisc", lab, "root", {"kind": "mqprio"}))
    kinds = [kind for kind, _, _ in restore_order(items)]
    assert kinds.index("channels") < kinds.index("steering")
    # followers last, in apply order: the qdisc (mqprio resets XPS) before the steering
    assert kinds[-3:] == ["qdisc", "steering", "irq_affinity"]


def test_re_planned_settings_join_the_transaction_in_flight_durably(tmp_path):
    journal = Journal(tmp_path)
    lab = Target("lab0", 3)
    why = None
    first = [Change("channels", lab, "rx", why, 2, 4),
             Change("steering", lab, "rx-0.rps_cpus", why, "0", "3")]
    journal.begin(first, 1234)
    later = [Change("steering", lab, "rx-0.rps_cpus", why, "1", "3"),  # already in: kept
             Change("steering", lab, "rx-3.rps_cpus", why, "0", "3")]  # a new queue
    assert journal.extend(later) == ["steering/lab0/rx-3.rps_cpus"]
    replayed = Journal(tmp_path)  # what a crash leaves: the whole transaction, on disk
    assert replayed.pending is not None and replayed.pending.pid == 1234
    before = {k: o.value for k, o in replayed.pending.before.items()}
    assert before == {"channels/lab0/rx": 2, "steering/lab0/rx-0.rps_cpus": "0",
                      "steering/lab0/rx-3.rps_cpus": "0"}
    assert set(replayed.originals) == set(before)
