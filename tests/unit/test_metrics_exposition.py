"""The text exposition writer: escaping, values, histograms, empty families."""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families

from nodenetd.metrics.exposition import Family, escape, fmt, join_labels, labels, render


def parse(body: bytes) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples}


def test_label_values_are_escaped_and_parse_back():
    odd = 'a "quoted" back\\slash\nnewline'
    family = Family("nodenetd_test_info", "gauge", "help with \\ and\nnewline")
    family.add(labels(device=odd, empty=None), 1)
    body = render([family])
    assert parse(body) == {("nodenetd_test_info", (("device", odd), ("empty", ""))): 1.0}
    assert b"# HELP nodenetd_test_info help with \\\\ and\\nnewline\n" in body
    assert escape("plain") == "plain"


def test_values_are_written_as_prometheus_does():
    assert [fmt(v) for v in (True, False, 3, 2.0, 0.25, math.inf, -math.inf, 1e20)] == [
        "1", "0", "3", "2", "0.25", "+Inf", "-Inf", "1e+20"]
    assert fmt(math.nan) == "NaN"


def test_labels_join():
    assert labels() == ""
    assert join_labels(labels(a=1), b=2) == '{a="1",b="2"}'
    assert join_labels("", b=2) == '{b="2"}'
    assert join_labels(labels(a=1)) == '{a="1"}'


def test_histograms_are_cumulative_with_inf_sum_and_count():
    family = Family("nodenetd_test_seconds", "histogram", "h")
    family.add_histogram(labels(group="g"), (0.1, 1.0), (2, 3, 1), 4.5)
    samples = parse(render([family]))
    g = ("group", "g")
    assert samples[("nodenetd_test_seconds_bucket", (g, ("le", "0.1")))] == 2
    assert samples[("nodenetd_test_seconds_bucket", (g, ("le", "1")))] == 5
    assert samples[("nodenetd_test_seconds_bucket", (g, ("le", "+Inf")))] == 6
    assert samples[("nodenetd_test_seconds_count", (g,))] == 6
    assert samples[("nodenetd_test_seconds_sum", (g,))] == 4.5


def test_a_histogram_without_labels():
    family = Family("nodenetd_test_seconds", "histogram", "h")
    family.add_histogram("", (1.0,), (0, 0), 0.0)
    assert b'nodenetd_test_seconds_bucket{le="+Inf"} 0\n' in render([family])


def test_families_without_samples_are_left_out():
    empty = Family("nodenetd_empty", "gauge", "nothing")
    full = Family("nodenetd_full", "gauge", "something").add("", 1)
    body = render([empty, full])
    assert b"nodenetd_empty" not in body
    assert body == b"# HELP nodenetd_full something\n# TYPE nodenetd_full gauge\nnodenetd_full 1\n"
