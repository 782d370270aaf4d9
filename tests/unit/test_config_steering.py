"""The steering section of an interface rule: what it loads into, and every mistake reported
with file, line, key path and what was expected, before anything is touched."""

from __future__ import annotations

import textwrap

import pytest

from nodenetd.config.loader import load_profile
from nodenetd.cpuset import CpuSet, Placement
from nodenetd.errors import ConfigError


def profile(tmp_path, steering: str):
    path = tmp_path / "steer.yaml"
    path.write_text("interfaces:\n  - name: nics\n    steering:\n"
                    + textwrap.indent(textwrap.dedent(steering), "      "))
    return path


def test_the_short_and_long_forms_load_into_placements(tmp_path):
    path = profile(tmp_path, """\
        rps: {cpus: numa-local, flow_count: auto}
        xps: all
        irq_affinity: {cpus: "0-3,8", spread: false, override: irqbalance}
        """)
    (rule,) = load_profile(path).rules
    steering = rule.settings["steering"]
    assert steering["rps_cpus"].value == Placement(CpuSet("numa-local"), spread=False)
    assert steering["rps_flow_cnt"].value == "auto"
    assert steering["xps_cpus"].value == Placement(CpuSet("all"), spread=True)
    irq = rule.settings["irq_affinity"]["cpus"]
    assert irq.value == Placement(CpuSet(None, frozenset({0, 1, 2, 3, 8})), spread=False)
    assert irq.override == "irqbalance"
    # each value points at its own line, so the plan says where it was asked for
    assert steering["rps_cpus"].origin.position.line == 4
    assert steering["xps_cpus"].origin.position.line == 5
    assert irq.origin.position.line == 6


def test_a_bare_number_is_one_cpu(tmp_path):
    (rule,) = load_profile(profile(tmp_path, "rps: 3\n")).rules
    assert rule.settings["steering"]["rps_cpus"].value.cpus.cpus == {3}


@pytest.mark.parametrize(
    ("steering", "line", "key_path", "says", "count"),
    [
        ("rps: 0-3x\n", 4, "interfaces[0].steering.rps",
         "invalid CPU set '0-3x': '0-3x' is not a CPU number or range such as 0-3 (expected "
         "CPU numbers and ranges such as 0-3,8, or all, numa-local, none)", 1),
        ("xps: {cpus: numa}\n", 4, "interfaces[0].steering.xps.cpus",
         "did you mean 'numa-local'", 1),
        ("rps: 3-1\n", 4, "interfaces[0].steering.rps", "runs backwards", 1),
        ("irq_affinity: none\n", 4, "interfaces[0].steering.irq_affinity",
         "interrupts need at least one CPU", 1),
        ("rps: {flow_count: 1}\n", 4, "interfaces[0].steering.rps.flow_count",
         "the kernel refuses a flow table of 1 entry", 1),
        ("rps: {flow_count: 2000000000}\n", 4, "interfaces[0].steering.rps.flow_count",
         "expected 'auto' or an integer from 0 to 1073741824", 1),
        ("xps: {cpu: all}\n", 4, "interfaces[0].steering.xps.cpu", "did you mean 'cpus'?", 2),
        ("xps: {spread: true}\n", 4, "interfaces[0].steering.xps.cpus", "missing required key", 1),
        ("irq_affinity: {cpus: all, override: kube-proxy}\n", 4,
         "interfaces[0].steering.irq_affinity.override", "expected one of: irqbalance", 1),
        ("rps: true\n", 4, "interfaces[0].steering.rps", "invalid value true", 1),
        ("rfs: all\n", 4, "interfaces[0].steering.rfs", "unknown key", 1),
        ("rps: {spread: true}\n", 4, "interfaces[0].steering.rps.spread", "unknown key", 1),
        ('irq_affinity: {cpus: 0-3,8}\n', 4, "interfaces[0].steering.irq_affinity.8",
         'quote a list there, as in cpus: "0-3,8"', 1),
    ],
)
def test_mistakes_are_reported_where_they_are(tmp_path, steering, line, key_path, says, count):
    with pytest.raises(ConfigError) as caught:
        load_profile(profile(tmp_path, steering))
    issues = [i for i in caught.value.issues if i.key_path == key_path]
    assert issues, [str(i) for i in caught.value.issues]
    assert issues[0].position.line == line
    assert says in str(issues[0])
    assert len(caught.value.issues) == count, [str(i) for i in caught.value.issues]
