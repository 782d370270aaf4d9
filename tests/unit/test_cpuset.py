"""CPU sets: the profile syntax, the kernel's list and mask forms, and spreading queues."""

from __future__ import annotations

import pytest

from nodenetd.cpuset import (
    CpuSet,
    CpuSetError,
    Placement,
    format_cpulist,
    format_mask,
    parse_cpulist,
    parse_mask,
    spread,
)


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        ("0-3,8", {0, 1, 2, 3, 8}),
        ("5", {5}),
        ("0-1", {0, 1}),
        (" 2 , 4-5 ", {2, 4, 5}),
        ("", set()),
        ("(null)", set()),  # what some kernels print for an unset nohz_full mask
    ],
)
def test_kernel_lists_parse(text, cpus):
    assert parse_cpulist(text) == frozenset(cpus)


@pytest.mark.parametrize(
    ("cpus", "text"),
    [({0, 1, 2, 3, 8}, "0-3,8"), ({8, 0, 2, 1, 3}, "0-3,8"), ({1}, "1"), ({0, 2, 4}, "0,2,4"),
     (set(), ""), ({0, 1, 2, 3, 5, 6, 7}, "0-3,5-7")],
)
def test_kernel_lists_render_canonically(cpus, text):
    assert format_cpulist(cpus) == text


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("3-1", "runs backwards"), ("0-3x", "not a CPU number"), ("a", "not a CPU number"),
     ("9000", "beyond any kernel's limit")],
)
def test_bad_lists_say_why(text, fragment):
    with pytest.raises(CpuSetError, match=fragment):
        parse_cpulist(text)


@pytest.mark.parametrize(
    ("cpus", "nbits", "mask"),
    [
        # %*pb over nr_cpu_ids bits: the first group has just enough hex digits for its
        # bits, the others 8; groups of 32 bits, most significant first.
        ({0, 1}, 2, "3"),  # this 2-CPU VM: `cat rps_cpus` prints "3"
        (set(), 2, "0"),
        ({1}, 2, "2"),
        ({0, 1, 2, 3}, 4, "f"),
        (set(), 8, "00"),
        ({0}, 8, "01"),
        ({0, 31}, 32, "80000001"),
        ({0, 1}, 40, "00,00000003"),
        ({39}, 40, "80,00000000"),
        ({0, 1}, 64, "00000000,00000003"),
        ({32, 63}, 64, "80000001,00000000"),
        ({70}, 72, "40,00000000,00000000"),
        (set(range(8, 16)), 16, "ff00"),
    ],
)
def test_masks_are_printed_exactly_as_the_kernel_prints_them(cpus, nbits, mask):
    assert format_mask(cpus, nbits) == mask
    assert parse_mask(mask) == frozenset(cpus)


def test_a_cpu_beyond_the_mask_is_refused_as_the_kernel_would():
    with pytest.raises(CpuSetError, match="outside a 2-bit mask"):
        format_mask({2}, 2)


@pytest.mark.parametrize("text", ["0x3", "3", "00000000,00000003", " 3\n"])
def test_masks_parse_in_every_form_the_kernel_accepts(text):
    assert parse_mask(text) == {0, 1}


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [("0-3,8", "0-3,8"), ("8,0-3,2", "0-3,8"), (8, "8"), (0, "0"), ("all", "all"),
     ("ALL", "all"), ("numa-local", "numa-local"), ("none", "none")],
)
def test_profile_sets_parse_once_and_render_canonically(raw, canonical):
    assert str(CpuSet.parse(raw)) == canonical


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [("numa", "did you mean 'numa-local'"), ("al", "did you mean 'all'"), ("", "empty"),
     (True, "not a CPU set"), (-1, "not a CPU number"), ("1-", "not a CPU number"),
     ([0, 1], "not a CPU set")],
)
def test_bad_profile_sets_say_why(raw, fragment):
    with pytest.raises(CpuSetError, match=fragment):
        CpuSet.parse(raw)


def test_words_resolve_against_the_machine():
    online = frozenset(range(16))
    node1 = frozenset(range(8, 16))
    assert CpuSet.parse("all").resolve(online, node1) == online
    assert CpuSet.parse("numa-local").resolve(online, node1) == node1
    # no node reported (a virtual NIC, one node): every online CPU
    assert CpuSet.parse("numa-local").resolve(online, None) == online
    assert CpuSet.parse("none").resolve(online, node1) == frozenset()
    # explicit CPUs are returned as written; the caller checks them against the machine
    assert CpuSet.parse("14-17").resolve(online, node1) == {14, 15, 16, 17}


def test_spreading_gives_every_cpu_exactly_one_queue():
    cpus = range(8)
    shares = [spread(cpus, q, 4) for q in range(4)]
    assert shares == [{0, 4}, {1, 5}, {2, 6}, {3, 7}]
    # one CPU per queue with as many CPUs as queues
    assert [spread(cpus, q, 8) for q in range(8)] == [{c} for c in range(8)]


def test_with_fewer_cpus_than_queues_queues_share_cpus_round_robin():
    assert [spread({8, 9}, q, 4) for q in range(4)] == [{8}, {9}, {8}, {9}]
    assert spread(set(), 0, 4) == frozenset()


def test_a_queue_irqs_spread_cpu_is_its_first_xps_cpu():
    """IRQ of queue q goes to the q-th CPU (spread one each); XPS of TX queue q includes it,
    so transmit completions run where the queue's CPU transmits."""
    cpus = sorted(range(4, 12))
    for queues in (2, 4, 8):
        for q in range(queues):
            assert cpus[q % len(cpus)] in spread(cpus, q, queues)


def test_placements_render_for_plans():
    assert str(Placement(CpuSet.parse("numa-local"))) == "numa-local (spread)"
    assert str(Placement(CpuSet.parse("0-3"), spread=False)) == "0-3"
    assert str(Placement(CpuSet.parse("none"))) == "none"
