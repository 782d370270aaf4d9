"""The journal of originals: durable, first original wins, pending transactions survive,
appends stay small, a torn tail from a crash is ignored, compaction keeps the content."""

import json
import os

import pytest

from nodenetd.config.model import Origin
from nodenetd.errors import JournalError, LockBusy
from nodenetd.tuning.journal import JOURNAL_NAME, Journal
from nodenetd.tuning.lock import MutationLock
from nodenetd.tuning.plan import Change, Target

WHY = Origin("test")


def change(key, current, desired, device="eth0", ifindex=2, kind="link"):
    return Change(kind, Target(device, ifindex), key, WHY, current, desired)


def records(tmp_path):
    return [json.loads(line) for line in (tmp_path / JOURNAL_NAME).read_text().splitlines()]


def test_begin_records_originals_durably_before_any_write(tmp_path):
    journal = Journal(tmp_path)
    fresh = journal.begin([change("mtu", 1500, 9000)], pid=123)
    assert fresh == ["link/eth0/mtu"]
    reread = Journal(tmp_path)  # what a process started after a crash sees
    assert reread.originals["link/eth0/mtu"].value == 1500
    assert reread.pending.pid == 123
    assert reread.pending.before["link/eth0/mtu"].value == 1500


def test_second_apply_never_overwrites_the_first_original(tmp_path):
    journal = Journal(tmp_path)
    journal.begin([change("mtu", 1500, 9000)], pid=1)
    journal.finish()
    journal = Journal(tmp_path)
    fresh = journal.begin([change("mtu", 9000, 4000)], pid=2)
    assert fresh == []
    assert Journal(tmp_path).originals["link/eth0/mtu"].value == 1500
    assert Journal(tmp_path).pending.before["link/eth0/mtu"].value == 9000  # rollback target


def test_finish_forgets_only_what_it_is_told(tmp_path):
    journal = Journal(tmp_path)
    journal.begin([change("mtu", 1500, 9000), change("txqueuelen", 1000, 5000)], pid=1)
    journal.finish(forget=["link/eth0/txqueuelen"])
    reloaded = Journal(tmp_path)
    assert list(reloaded.originals) == ["link/eth0/mtu"]
    assert reloaded.pending is None


def test_a_transaction_appends_a_few_lines_not_the_whole_journal(tmp_path):
    journal = Journal(tmp_path)
    journal.begin([change("mtu", 1500, 9000, device=f"v{i}", ifindex=i) for i in range(200)], 1)
    journal.finish()
    size = (tmp_path / JOURNAL_NAME).stat().st_size
    journal.begin([change("mtu", 1500, 9000, device="new", ifindex=999)], pid=2)
    journal.finish()
    grown = (tmp_path / JOURNAL_NAME).stat().st_size - size
    assert 0 < grown < 400
    assert [r["t"] for r in records(tmp_path)[-3:]] == ["origs", "begin", "end"]


def test_a_torn_last_line_is_ignored_and_then_overwritten(tmp_path):
    journal = Journal(tmp_path)
    journal.begin([change("mtu", 1500, 9000)], pid=1)
    journal.finish()
    with open(tmp_path / JOURNAL_NAME, "a") as handle:
        handle.write('{"t":"begin","pid":7,"be')  # the crash hit mid-append
    journal = Journal(tmp_path)
    assert journal.pending is None and journal.originals["link/eth0/mtu"].value == 1500
    journal.begin([change("txqueuelen", 1000, 5000)], pid=2)
    assert Journal(tmp_path).pending.pid == 2
    assert all(line.startswith("{") and line.endswith("}")
               for line in (tmp_path / JOURNAL_NAME).read_text().splitlines())


def test_compaction_keeps_exactly_the_live_state(tmp_path):
    journal = Journal(tmp_path)
    for round_ in range(1000):  # each round adds and forgets: the log grows, the state doesn't
        journal.begin([change("mtu", 1500, 9000, device=f"v{round_}", ifindex=round_)], 1)
        journal.finish(forget=[f"link/v{round_}/mtu"] if round_ % 2 else [])
    assert len(records(tmp_path)) < 2000  # compacted: fewer lines than the 3500 appended
    reread = Journal(tmp_path)
    assert reread.originals == journal.originals
    assert len(reread.originals) == 500


def test_corrupt_journal_is_an_error_not_an_empty_journal(tmp_path):
    (tmp_path / JOURNAL_NAME).write_text("{not json\n")
    with pytest.raises(JournalError):
        Journal(tmp_path)


def test_no_temp_files_left_behind(tmp_path):
    journal = Journal(tmp_path)
    journal.begin([change("mtu", 1500, 9000)], pid=1)
    journal.save()
    assert sorted(os.listdir(tmp_path)) == [JOURNAL_NAME]


def test_lock_loser_is_told_who_holds_it(tmp_path):
    with MutationLock(tmp_path), pytest.raises(LockBusy, match=r"pid \d+"):
        MutationLock(tmp_path).__enter__()
    with MutationLock(tmp_path):  # released: the next one gets it
        pass
