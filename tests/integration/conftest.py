"""The end-to-end tests' node: a lab namespace with veth NICs cabled to a 'switch'
namespace, its config and profiles in a temp dir (tests/lab/node.py)."""

from __future__ import annotations

import pytest

from tests.lab.node import Node


@pytest.fixture
def node(make_netns, tmp_path) -> Node:
    return Node(make_netns("node"), make_netns("switch"), tmp_path)
