"""The journal of originals: durable, first original wins, pending transactions survive."""

import json
import os

import pytest

from nodenetd.config.model import Origin
from nodenetd.errors import JournalError, LockBusy
from nodenetd.tuning.journal import Journal
from nodenetd.tuning.lock import MutationLock
from nodenetd.tuning.plan import Change, Target

WHY = Origin("test")


def change(key, current, desired, device="eth0", ifindex=2, kind="link"):
    return Change(kind, Target(device, ifindex), key, WHY, current, desired)


def test_begin_records_originals_durably_before_any_write(tmp_path):
    journal = Journal(tmp_path)
    fresh = journal.begin([change("mtu", 1500, 9000)], pid=123)
    assert fresh == ["link/eth0/mtu"]
    on_disk = json.loads((tmp_path / "journal.json").read_text())
    assert on_disk["originals"]["link/eth0/mtu"]["value"] == 1500
    assert on_disk["pending"]["pid"] == 123  # a crash now is recoverable


def test_second_apply_never_overwrites_the_first_original(tmp_path):
    journal = Journal(tmp_path)
    journal.begin([change("mtu", 1500, 9000)], pid=1)
    journal.finish()
    journal = Journal(tmp_path)
    fresh = journal.begin([change("mtu", 9000, 4000)], pid=2)
    assert fresh == []
    assert journal.originals["link/eth0/mtu"].value == 1500
    assert journal.pending.before["link/eth0/mtu"].value == 9000  # rollback target


def test_finish_forgets_only_what_it_is_told(tmp_path):
    journal = Journal(tmp_path)
    journal.begin([change("mtu", 1500, 9000), change("txqueuelen", 1000, 5000)], pid=1)
    journal.finish(forget=["link/eth0/txqueuelen"])
    reloaded = Journal(tmp_path)
    assert list(reloaded.originals) == ["link/eth0/mtu"]
    assert reloaded.pending is None


def test_corrupt_journal_is_an_error_not_an_empty_journal(tmp_path):
    (tmp_path / "journal.json").write_text("{not json")
    with pytest.raises(JournalError, match="unreadable journal"):
        Journal(tmp_path)


def test_no_temp_files_left_behind(tmp_path):
    journal = Journal(tmp_path)
    journal.begin([change("mtu", 1500, 9000)], pid=1)
    assert sorted(os.listdir(tmp_path)) == ["journal.json"]


def test_lock_loser_is_told_who_holds_it(tmp_path):
    with MutationLock(tmp_path), pytest.raises(LockBusy, match=r"pid \d+"):
        MutationLock(tmp_path).__enter__()
    with MutationLock(tmp_path):  # released: the next one gets it
        pass
