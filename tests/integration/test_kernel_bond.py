"""The bond adapter on a kernel without bonding says so, as Unsupported with a way out.

This is the host lane's view of nodenetd.kernel.bond: the kernel lab (tests/kernel) covers the
working path. Skipped where the kernel does have bonding, since there is nothing to refuse.
"""

from __future__ import annotations

import os

import pytest

from nodenetd.errors import Gone, Unsupported
from nodenetd.kernel.bond import BondAdapter
from tests.kernel_lab.probe import missing_kernel_features

pytestmark = pytest.mark.root


@pytest.fixture
def adapter(netns):
    with BondAdapter(netns=netns.name) as bond:
        yield bond


def test_creating_a_bond_without_bonding_support_is_unsupported(adapter, netns):
    if "bonding" not in missing_kernel_features():
        pytest.skip("this kernel has bonding; the kernel lab tests cover it")

    with pytest.raises(Unsupported) as err:
        adapter.create_active_backup("bond0")

    assert err.value.target == "bond0"
    assert err.value.setting == "create bond (mode active-backup)"
    assert "EOPNOTSUPP" in str(err.value)
    assert "load the 'bonding' module" in str(err.value)
    assert netns.run("ip", "link", "show", "bond0", check=False).returncode != 0


def test_reading_a_missing_bond_is_gone(adapter):
    with pytest.raises(Gone) as err:
        adapter.status("bond0")

    assert (err.value.target, err.value.setting) == ("bond0", "read bond")


def test_enslaving_a_missing_member_is_gone(adapter, netns):
    netns.veth("m0", "s0")

    with pytest.raises(Gone) as err:
        adapter.enslave("bond-missing", "m0")

    assert err.value.target == "bond-missing"


def test_a_missing_namespace_is_gone_not_created():
    with pytest.raises(Gone) as err:
        BondAdapter(netns="nnd-no-such-namespace")

    assert err.value.target == "netns nnd-no-such-namespace"
    assert not os.path.exists("/run/netns/nnd-no-such-namespace")
