"""CPU sets: the profile syntax and the two forms the kernel prints them in. Pure: no I/O.

Profiles write a CPU set as numbers and ranges (``0-3,8``, or a bare integer), or as one of
the words ``all`` (every online CPU), ``numa-local`` (the CPUs of the NIC's NUMA node) and
``none`` (no CPU: RPS/XPS off). :class:`CpuSet` parses that once; ``str()`` renders it back
canonically (sorted, ranges merged: ``8,0-3,2`` -> ``0-3,8``).

The kernel prints CPU sets as lists (``smp_affinity_list``, ``cpulist``, ``online``:
:func:`parse_cpulist` / :func:`format_cpulist`) and as hex masks (``rps_cpus``,
``xps_cpus``, ``smp_affinity``). A mask is printed by ``%*pb`` (lib/vsprintf.c,
``bitmap_string``) over ``nr_cpu_ids`` bits: 32-bit groups separated by commas, most
significant first, every group 8 hex digits except the first, which has just enough digits
for its bits, zero-padded (2 CPUs: ``3``; 40 CPUs: ``00,00000003``; 64 CPUs:
``00000000,00000003``). :func:`format_mask` produces exactly that text, so a desired mask
compares equal to what the kernel reads back.

:func:`spread` places queues on CPUs the way Documentation/networking/scaling.rst recommends
for XPS and IRQ affinity: one CPU per queue where there are as many CPUs as queues, each CPU
on exactly one queue where there are more.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "CPUSET_WORDS",
    "MAX_CPUS",
    "CpuSet",
    "CpuSetError",
    "Placement",
    "format_cpulist",
    "format_mask",
    "parse_cpulist",
    "parse_mask",
    "spread",
]

CPUSET_WORDS = ("all", "numa-local", "none")
MAX_CPUS = 8192  # the largest NR_CPUS any kernel configuration allows (CONFIG_NR_CPUS)
_RANGE_RE = re.compile(r"^(\d+)(?:-(\d+))?$")
_CHUNK = 32

Word = Literal["all", "numa-local", "none"]


class CpuSetError(ValueError):
    """A CPU set that cannot be parsed; the message says what is wrong."""


# --------------------------------------------------------------------------- kernel lists


def parse_cpulist(text: str) -> frozenset[int]:
    """``0-3,8`` -> {0, 1, 2, 3, 8}. Empty text (and ``(null)``, which some kernels print for
    an unset mask) is the empty set. Raises CpuSetError."""
    text = text.strip()
    if not text or text == "(null)":
        return frozenset()
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        match = _RANGE_RE.match(part)
        if not match:
            raise CpuSetError(f"'{part}' is not a CPU number or range such as 0-3")
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) is not None else low
        if high < low:
            raise CpuSetError(f"the range '{part}' runs backwards (write {high}-{low})")
        if high >= MAX_CPUS:
            raise CpuSetError(f"CPU {high} is beyond any kernel's limit of {MAX_CPUS} CPUs")
        cpus.update(range(low, high + 1))
    return frozenset(cpus)


def format_cpulist(cpus: Iterable[int]) -> str:
    """{0, 1, 2, 3, 8} -> ``0-3,8`` (the kernel's ``%*pbl``); the empty set -> ``""``."""
    ordered = sorted(set(cpus))
    parts: list[str] = []
    start = prev = None
    for cpu in ordered:
        if prev is not None and cpu == prev + 1:
            prev = cpu
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = cpu
    if start is not None:
        parts.append(str(start) if start == prev else f"{start}-{prev}")
    return ",".join(parts)


# --------------------------------------------------------------------------- kernel masks


def format_mask(cpus: Iterable[int], nbits: int) -> str:
    """The hex mask of ``cpus`` over ``nbits`` bits exactly as the kernel prints it (``%*pb``).
    Raises CpuSetError for a CPU at or above ``nbits`` (the kernel refuses it: EOVERFLOW)."""
    if nbits <= 0:
        raise CpuSetError("a mask needs at least one bit")
    value = 0
    for cpu in cpus:
        if not 0 <= cpu < nbits:
            raise CpuSetError(f"CPU {cpu} is outside a {nbits}-bit mask")
        value |= 1 << cpu
    first = nbits % _CHUNK or _CHUNK
    groups = []
    shift = nbits - first
    width = (first + 3) // 4
    while shift >= 0:
        size = first if not groups else _CHUNK
        groups.append(f"{(value >> shift) & ((1 << size) - 1):0{width}x}")
        shift -= _CHUNK
        width = 8
    return ",".join(groups)


def parse_mask(text: str) -> frozenset[int]:
    """A hex mask as the kernel prints or accepts it (``ff,00000001``, optional ``0x``) -> the
    set of CPUs (bits) it has. Raises CpuSetError."""
    digits = text.strip().replace(",", "")
    digits = digits.removeprefix("0x").removeprefix("0X")
    if not digits:
        return frozenset()
    try:
        value = int(digits, 16)
    except ValueError:
        raise CpuSetError(f"'{text.strip()}' is not a hex CPU mask") from None
    return frozenset(bit for bit in range(value.bit_length()) if value >> bit & 1)


# --------------------------------------------------------------------------- profile syntax


@dataclass(frozen=True)
class CpuSet:
    """A CPU set as a profile writes it: explicit CPUs (``word`` None) or a word."""

    word: Word | None = None
    cpus: frozenset[int] = frozenset()

    @classmethod
    def parse(cls, raw: object) -> CpuSet:
        """``"0-3,8"``, ``8``, ``"all"``, ``"numa-local"``, ``"none"`` -> CpuSet.
        Raises CpuSetError saying what is wrong."""
        if isinstance(raw, bool) or raw is None:
            raise CpuSetError("not a CPU set")
        if isinstance(raw, int):
            if raw < 0:
                raise CpuSetError(f"{raw} is not a CPU number")
            return cls(None, parse_cpulist(str(raw)))
        if not isinstance(raw, str):
            raise CpuSetError("not a CPU set")
        text = raw.strip()
        if text.lower() in CPUSET_WORDS:
            return cls(text.lower(), frozenset())  # type: ignore[arg-type]
        if not text:
            raise CpuSetError("empty CPU set (write none for no CPU)")
        if not text[0].isdigit():
            close = [w for w in CPUSET_WORDS if w.startswith(text.lower()[:2])]
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise CpuSetError(f"'{text}' is neither CPU numbers nor one of "
                              f"{', '.join(CPUSET_WORDS)}{hint}")
        return cls(None, parse_cpulist(text))

    def __str__(self) -> str:
        return self.word if self.word is not None else format_cpulist(self.cpus)

    def resolve(self, online: frozenset[int], local: frozenset[int] | None) -> frozenset[int]:
        """The CPUs this set stands for on this machine. ``local``: the NIC's NUMA node's
        CPUs, or None when the kernel reports no node for it (a virtual NIC, a single-node
        machine), in which case ``numa-local`` is every online CPU. Explicit CPUs are
        returned as written (checking them against the machine is the caller's job)."""
        if self.word == "all":
            return online
        if self.word == "none":
            return frozenset()
        if self.word == "numa-local":
            cpus = (local & online) if local is not None else online
            return cpus or online
        return self.cpus


@dataclass(frozen=True)
class Placement:
    """Where queues go: a CPU set, and whether each queue gets its own share of it
    (``spread``, see :func:`spread`) or the whole set."""

    cpus: CpuSet
    spread: bool = True

    def __str__(self) -> str:
        if self.spread and self.cpus.word != "none":
            return f"{self.cpus} (spread)"
        return str(self.cpus)


def spread(cpus: Sequence[int] | frozenset[int], queue: int, queues: int) -> frozenset[int]:
    """The CPUs queue ``queue`` (of ``queues``) gets when a set is spread over queues.

    With at least as many CPUs as queues, every CPU serves exactly one queue: queue q gets the
    q-th, (q+queues)-th, ... CPUs of the sorted set (so its first CPU is the one
    :func:`spread` gives IRQ q when IRQs are spread one CPU each). With fewer CPUs than
    queues, queue q gets the one CPU ``cpus[q % len(cpus)]``. Empty set: empty."""
    ordered = sorted(cpus)
    if not ordered or queues <= 0:
        return frozenset()
    if len(ordered) >= queues:
        return frozenset(ordered[queue % queues::queues])
    return frozenset({ordered[queue % len(ordered)]})
