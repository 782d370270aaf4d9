"""NIC -> interrupts -> queues, /proc/interrupts, CPU and NUMA facts and irqbalance, read from
recorded sysfs/procfs trees (tests/fixtures/steering; the virtio one is this VM's)."""

from __future__ import annotations

import errno
import os

import pytest

from nodenetd.errors import Gone, Refused, Unsupported
from nodenetd.kernel.steering import (
    SteeringFs,
    irq_write_error,
    parse_interrupts,
    queue_of_irq,
)
from tests.unit.steering_trees import FIXTURES, build

# --- /proc/interrupts ------------------------------------------------------------------------


def test_proc_interrupts_gives_each_irq_its_action_names():
    names = parse_interrupts((FIXTURES / "virtio" / "interrupts").read_text())
    assert names[38] == ("virtio2-input.0",)
    assert names[39] == ("virtio2-output.0",)
    assert names[24] == ("ACPI:Ged",)
    assert all(isinstance(irq, int) for irq in names)  # NMI:, LOC: ... are not IRQs


def test_shared_irqs_list_every_action_and_unnamed_irqs_none():
    ixgbe = parse_interrupts((FIXTURES / "ixgbe" / "interrupts").read_text())
    assert ixgbe[16] == ("ehci_hcd:usb1", "i801_smbus")
    assert ixgbe[60] == ("eth2-TxRx-0",)  # pre-6.2 format: IR-PCI-MSI 2621440-edge
    mlx5 = parse_interrupts((FIXTURES / "mlx5" / "interrupts").read_text())
    assert mlx5[151] == ("mlx5_comp0@pci:0000:3b:00.0",)
    assert mlx5[184] == ()  # a vector without a handler: the line ends at "33-edge"


def test_a_line_with_a_long_hwirq_keeps_its_name():
    text = ("           CPU0       CPU1\n"
            "  78:       1670          0  IR-PCI-MSI 52955137-edge      ice-lan1-TxRx-0\n"
            "  30:          0          0   GICv3  30 Level     arch_timer\n")
    assert parse_interrupts(text) == {78: ("ice-lan1-TxRx-0",), 30: ("arch_timer",)}


# --- names -> queues -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "ifname", "virtio", "queue"),
    [
        ("mlx5_comp3@pci:0000:3b:00.0", "ens1f0np0", None, (3, 3)),
        ("mlx5_async0@pci:0000:3b:00.0", "ens1f0np0", None, None),
        ("mlx4-2@0000:04:00.0", "eth0", None, (2, 2)),
        ("eth0-TxRx-3", "eth0", None, (3, 3)),
        ("eth0-rx-2", "eth0", None, (2, None)),
        ("eth0-tx-2", "eth0", None, (None, 2)),
        ("eth0", "eth0", None, None),  # ixgbe's link vector
        ("i40e-eth0-TxRx-3", "eth0", None, (3, 3)),
        ("i40e-0000:3b:00.0:misc", "eth0", None, None),
        ("ice-lan1-TxRx-0", "lan1", None, (0, 0)),
        ("ice-0000:65:00.0:ctrl-TxRx-0", "lan0", None, None),  # another netdev's name slot
        ("eth0-Tx-Rx-5", "eth0", None, (5, 5)),  # ena
        ("eth0-fp-1", "eth0", None, (1, 1)),  # qede fastpath
        ("veth1-TxRx-0", "eth1", None, None),  # not a suffix match of another name
        ("virtio2-input.0", "eth0", "virtio2", (0, None)),
        ("virtio2-output.3", "eth0", "virtio2", (None, 3)),
        ("virtio2-config", "eth0", "virtio2", None),
        ("virtio3-input.0", "eth0", "virtio2", None),  # another virtio device
    ],
)
def test_queue_interrupts_are_recognised_by_driver_naming(name, ifname, virtio, queue):
    assert queue_of_irq(name, ifname, virtio) == queue


def test_after_a_rename_any_interface_name_is_accepted_but_not_control_vectors():
    assert queue_of_irq("i40e-enp59s0f0-TxRx-2", "uplink0") is None
    assert queue_of_irq("i40e-enp59s0f0-TxRx-2", "uplink0", strict=False) == (2, 2)
    assert queue_of_irq("ice-0000:65:00.0:ctrl-TxRx-0", "lan0", strict=False) is None


# --- a NIC's interrupts from sysfs -----------------------------------------------------------


def test_virtio_vectors_belong_to_the_pci_parent_of_the_virtio_device(tmp_path):
    fs = build(tmp_path, "virtio")
    nic = fs.nic_irqs("eth0")
    assert nic.owner.endswith("0000:00:03.0")
    assert nic.irqs == (37, 38, 39)
    assert [(q.irq, q.queue) for q in nic.queues] == [(38, "rx-0"), (39, "tx-0")]
    assert nic.modules == ("virtio_net", "virtio-pci")  # the IRQ owner's last
    assert fs.numa_node("eth0") is None  # numa_node -1


def test_mlx5_completion_vectors_map_to_channels_and_the_second_port_is_not_ours(tmp_path):
    fs = build(tmp_path, "mlx5")
    nic = fs.nic_irqs("ens1f0np0")
    assert nic.irqs == tuple(range(150, 167))  # async + 16 completion vectors
    assert [q.irq for q in nic.queues] == list(range(151, 167))
    assert [q.queue for q in nic.queues[:3]] == ["rxtx-0", "rxtx-1", "rxtx-2"]
    assert all("3b:00.0" in q.name for q in nic.queues)
    assert nic.modules == ("mlx5_core",)  # not the root port's pcieport
    assert fs.numa_node("ens1f0np0") == 1
    assert fs.node_cpus(1) == frozenset(range(8, 16))


def test_ixgbe_queue_vectors_and_not_its_link_vector(tmp_path):
    fs = build(tmp_path, "ixgbe")
    nic = fs.nic_irqs("eth2")
    assert nic.irqs == (60, 61, 62, 63, 64)
    assert [(q.irq, q.name) for q in nic.queues] == [
        (60, "eth2-TxRx-0"), (61, "eth2-TxRx-1"), (62, "eth2-TxRx-2"), (63, "eth2-TxRx-3")]
    assert fs.driver_modules("eth2") == ("ixgbe",)


def test_i40e_queue_vectors_and_after_a_rename_too(tmp_path):
    fs = build(tmp_path, "i40e")
    assert [q.irq for q in fs.nic_irqs("enp59s0f0").queues] == list(range(91, 99))
    renamed = build(tmp_path / "renamed", "i40e", "tree-renamed.txt")
    nic = renamed.nic_irqs("uplink0")
    assert [q.irq for q in nic.queues] == list(range(91, 99))  # the misc vector stays out


def test_a_virtual_interface_has_no_interrupts(tmp_path):
    fs = build(tmp_path, "virtio")
    (tmp_path / "sys" / "class" / "net" / "veth0" / "queues" / "rx-0").mkdir(parents=True)
    assert fs.nic_irqs("veth0") is None
    assert fs.numa_node("veth0") is None


# --- queues, CPUs, IRQ affinity ----------------------------------------------------------------


def test_queues_and_their_attributes(tmp_path):
    fs = build(tmp_path, "mlx5")
    queues = fs.queues("ens1f0np0")
    assert queues.rx == tuple(range(8)) and queues.tx == tuple(range(8))
    fs.write_queue("ens1f0np0", "rx-3", "rps_cpus", "ff00")
    assert fs.read_queue("ens1f0np0", "rx-3", "rps_cpus") == "ff00"
    with pytest.raises(Gone, match="queue rx-9 no longer exists"):
        fs.read_queue("ens1f0np0", "rx-9", "rps_cpus")
    with pytest.raises(Gone, match="interface no longer exists"):
        fs.queues("eth9")
    with pytest.raises(Unsupported, match="no such queue attribute"):
        fs.read_queue("ens1f0np0", "rx-0", "xps_cpus")


def test_a_kernel_without_rps_is_unsupported_not_gone(tmp_path):
    fs = build(tmp_path, "ixgbe")
    os.unlink(next((tmp_path / "sys").glob("devices/**/eth2/queues/rx-0/rps_cpus")))
    with pytest.raises(Unsupported, match="CONFIG_RPS"):
        fs.read_queue("eth2", "rx-0", "rps_cpus")


def test_cpu_facts(tmp_path):
    facts = build(tmp_path, "mlx5").cpu_facts()
    assert facts.online == frozenset(range(16)) and facts.nr_cpu_ids == 16
    cpu = tmp_path / "sys" / "devices" / "system" / "cpu"
    (cpu / "isolated").write_text("2-3\n")
    (cpu / "nohz_full").write_text("(null)\n")
    (cpu / "possible").write_text("0-63\n")  # hot-pluggable CPUs widen every mask
    facts = SteeringFs(tmp_path / "sys", tmp_path / "proc").cpu_facts()
    assert facts.nr_cpu_ids == 64
    assert facts.housekeeping == frozenset(range(16)) - {2, 3}


def test_irq_affinity_reads_and_writes_lists(tmp_path):
    fs = build(tmp_path, "virtio")
    assert fs.irq_affinity(38) == {0, 1}
    assert fs.irq_effective(38) == {1}
    fs.set_irq_affinity(38, frozenset({1}))
    assert (tmp_path / "proc" / "irq" / "38" / "smp_affinity_list").read_text() == "1"
    with pytest.raises(Gone, match="IRQ 99 no longer exists"):
        fs.set_irq_affinity(99, frozenset({1}))


@pytest.mark.parametrize(
    ("code", "error", "fragment"),
    [(errno.EIO, Unsupported, "managed interrupt"), (errno.ENOSPC, Unsupported, "vector"),
     (errno.EINVAL, Refused, "EINVAL"), (errno.EACCES, Unsupported, "needs root"),
     (errno.EROFS, Unsupported, "ReadWritePaths=/proc/irq"), (errno.ENODEV, Gone, "ENODEV")],
)
def test_irq_write_errors_are_typed(code, error, fragment):
    """The kernel's answers to a write of smp_affinity_list (kernel/irq/proc.c,
    irq_affinity_proc_write: EIO when !irq_can_set_affinity_usr, i.e. a managed IRQ)."""
    found = irq_write_error(OSError(code, os.strerror(code)), 38, "1", "eth0",
                            "irq_affinity.38:virtio2-input.0")
    assert type(found) is error and fragment in found.reason
    assert found.target == "eth0" and found.setting == "irq_affinity.38:virtio2-input.0"


def test_a_refused_write_reaches_the_caller_typed(tmp_path):
    """/dev/full refuses every write with ENOSPC, as the kernel does when no interrupt vector
    is free on the CPUs asked for."""
    fs = build(tmp_path, "virtio")
    target = tmp_path / "proc" / "irq" / "38" / "smp_affinity_list"
    target.unlink()
    target.symlink_to("/dev/full")
    with pytest.raises(Unsupported, match="no free interrupt vector on CPUs 1"):
        fs.set_irq_affinity(38, frozenset({1}), target="eth0")


def test_the_global_sock_flow_table_size(tmp_path):
    fs = build(tmp_path, "virtio")
    assert fs.sock_flow_entries() is None  # not in this namespace
    core = tmp_path / "proc" / "sys" / "net" / "core"
    core.mkdir(parents=True)
    (core / "rps_sock_flow_entries").write_text("32768\n")
    assert fs.sock_flow_entries() == 32768


# --- irqbalance ------------------------------------------------------------------------------


def fake_process(proc, pid, comm, *argv):
    directory = proc / str(pid)
    directory.mkdir(parents=True)
    (directory / "comm").write_text(comm + "\n")
    (directory / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")


def test_no_irqbalance(tmp_path):
    fs = build(tmp_path, "virtio")
    fake_process(tmp_path / "proc", 1, "systemd", "/sbin/init")
    assert fs.irqbalance() is None


def test_irqbalance_and_what_it_was_told_to_leave_alone(tmp_path):
    fs = build(tmp_path, "mlx5")
    fake_process(tmp_path / "proc", 1, "systemd", "/sbin/init")
    fake_process(tmp_path / "proc", 812, "irqbalance", "/usr/sbin/irqbalance", "--foreground",
                 "--banirq=151", "-i", "152", "-i153", "--banmod", "nvme", "-m", "ixgbe")
    found = fs.irqbalance()
    assert found.pid == 812 and found.who == "irqbalance (pid 812)"
    assert found.banned_irqs == {151, 152, 153}
    assert found.banned_modules == {"nvme", "ixgbe"}
    assert found.leaves_alone(152) and not found.leaves_alone(154)
    assert found.leaves_alone(154, ("ixgbe",))


def test_irqbalance_outside_our_pid_namespace_is_seen_by_its_unit_cgroup(tmp_path):
    fs = build(tmp_path, "virtio")
    cgroup = tmp_path / "sys" / "fs" / "cgroup" / "system.slice" / "irqbalance.service"
    cgroup.mkdir(parents=True)
    (cgroup / "cgroup.procs").write_text("")
    assert fs.irqbalance() is None  # the unit's cgroup exists but is empty: not running
    (cgroup / "cgroup.procs").write_text("812\n")
    found = fs.irqbalance()
    assert found is not None and found.pid is None and found.who == "irqbalance.service"
