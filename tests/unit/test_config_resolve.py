"""Inheritance: extends chains, diamonds, node order, overrides last, cycles, the search path."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodenetd.config import loader
from nodenetd.config.loader import ProfileLibrary, builtin_profile_dir, load_node_config
from nodenetd.config.model import NodeConfig, SysctlValue
from nodenetd.config.resolve import linearize, resolve, resolve_profiles
from nodenetd.errors import ConfigError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "config"
PROFILES = FIXTURES / "profiles"


@pytest.fixture
def library() -> ProfileLibrary:
    return ProfileLibrary([PROFILES])


def somaxconn(resolved) -> SysctlValue:
    return resolved.sysctls["net.core.somaxconn"].value


def rule_names(resolved) -> list[str]:
    return [rule.name for rule in resolved.rules]


class TestMergeOrder:
    def test_a_three_level_chain_applies_the_root_first(self, library):
        resolved = resolve_profiles(["top"], library)
        assert resolved.names == ("base", "middle", "top")
        assert rule_names(resolved) == ["base-all", "middle-rule", "top-rule"]
        assert somaxconn(resolved) == SysctlValue("=", (5000,))

    def test_a_later_sysctl_replaces_an_earlier_one_and_remembers_who_set_it(self, library):
        resolved = resolve_profiles(["top"], library)
        origin = resolved.sysctls["net.core.somaxconn"].origin
        assert (origin.profile, origin.position.file) == ("top", str(PROFILES / "top.yaml"))
        assert resolved.sysctls["net.core.rmem_max"].origin.profile == "base"

    def test_a_diamond_includes_the_shared_parent_once_at_its_first_place(self, library):
        resolved = resolve_profiles(["app"], library)
        assert resolved.names == ("base", "web", "db", "app")
        assert rule_names(resolved) == ["base-all", "web-rule", "db-rule", "app-rule"]
        assert somaxconn(resolved) == SysctlValue("=", (3000,))  # db comes after web

    def test_node_profiles_are_applied_in_order_and_overrides_last(self, library):
        node = load_node_config(FIXTURES / "nodenetd.yaml")  # profiles: [app, top]
        resolved = resolve(node, ProfileLibrary.for_node(node))
        assert resolved.names == ("base", "web", "db", "app", "middle", "top")
        assert rule_names(resolved) == [
            "base-all",
            "web-rule",
            "db-rule",
            "app-rule",
            "middle-rule",
            "top-rule",
            "local",
        ]
        wanted = resolved.sysctls["net.core.somaxconn"]
        assert wanted.value == SysctlValue("=", (9999,))
        assert wanted.origin.profile == "overrides"
        assert wanted.origin.position.file == node.path
        assert resolved.sysctls["net.core.netdev_budget"].origin.profile == "top"

    def test_listing_a_profile_twice_includes_it_once(self, library):
        assert resolve_profiles(["web", "base", "web"], library).names == ("base", "web")

    def test_a_loaded_profile_can_be_resolved_without_being_in_the_library(self, tmp_path):
        (tmp_path / "mine.yaml").write_text("extends: [web]\n")
        profile = loader.load_profile(tmp_path / "mine.yaml")
        assert linearize([profile], ProfileLibrary([PROFILES]))[-1] is profile


class TestBrokenReferences:
    def test_a_cycle_is_an_error_naming_the_cycle_at_the_extends_that_closes_it(self):
        library = ProfileLibrary([FIXTURES / "cycle"])
        with pytest.raises(ConfigError) as excinfo:
            resolve_profiles(["a"], library)
        (issue,) = excinfo.value.issues
        assert "extends cycle: a -> b -> c -> a" in issue.message
        assert str(issue.position) == f"{FIXTURES}/cycle/c.yaml:3"
        assert issue.key_path == "extends[0]"

    def test_a_profile_extending_itself_is_a_cycle(self):
        with pytest.raises(ConfigError, match="extends cycle: self -> self"):
            resolve_profiles(["self"], ProfileLibrary([FIXTURES / "cycle"]))

    def test_an_unknown_parent_points_at_the_extends_line_with_a_suggestion(self, tmp_path):
        (tmp_path / "child.yaml").write_text("description: x\nextends: [base, bsae]\n")
        library = ProfileLibrary([tmp_path, PROFILES])
        with pytest.raises(ConfigError) as excinfo:
            resolve_profiles(["child"], library)
        (issue,) = excinfo.value.issues
        assert str(issue.position) == f"{tmp_path}/child.yaml:2"
        assert issue.key_path == "extends[1]"
        assert issue.message == "unknown profile 'bsae'"
        assert issue.expected == f"a bsae.yaml in {tmp_path}, {PROFILES}"
        assert issue.hint == "did you mean 'base'?"

    def test_an_unknown_node_profile_points_at_the_profiles_line(self, tmp_path):
        path = tmp_path / "nodenetd.yaml"
        path.write_text(f"profile_dirs: [{PROFILES}]\nprofiles:\n  - web\n  - tpo\n")
        node = load_node_config(path)
        with pytest.raises(ConfigError) as excinfo:
            resolve(node, ProfileLibrary(node.profile_dirs))
        (issue,) = excinfo.value.issues
        assert (str(issue.position), issue.key_path) == (f"{path}:4", "profiles[1]")
        assert issue.hint == "did you mean 'top'?"

    def test_all_reference_problems_are_reported_together(self, tmp_path):
        (tmp_path / "x.yaml").write_text("extends: [nope, x]\n")
        (tmp_path / "y.yaml").write_text("extends: [missing]\n")
        with pytest.raises(ConfigError) as excinfo:
            resolve_profiles(["x", "y", "gone"], ProfileLibrary([tmp_path]))
        assert [(i.key_path, i.message) for i in excinfo.value.issues] == [
            ("extends[0]", "unknown profile 'nope'"),
            ("extends[1]", "extends cycle: x -> x"),
            ("extends[0]", "unknown profile 'missing'"),
            ("", "unknown profile 'gone'"),
        ]

    def test_a_parent_with_mistakes_reports_them_in_its_own_file(self):
        with pytest.raises(ConfigError) as excinfo:
            resolve_profiles(["child"], ProfileLibrary([FIXTURES / "broken"]))
        (issue,) = excinfo.value.issues
        assert str(issue.position) == f"{FIXTURES}/broken/parent.yaml:3"


class TestProfileLibrary:
    def test_the_first_directory_with_the_name_wins(self):
        etc, builtin = FIXTURES / "shadow" / "etc", FIXTURES / "shadow" / "builtin"
        library = ProfileLibrary([etc, builtin])
        assert library.find("base") == etc / "base.yaml"
        assert library.load("base").description == "the local copy in profiles.d"
        assert library.load("extra").path == str(builtin / "extra.yaml")
        assert library.names() == ["base", "extra"]

    def test_for_node_searches_the_node_dirs_then_the_builtin_dir_last(self, monkeypatch):
        etc, builtin = FIXTURES / "shadow" / "etc", FIXTURES / "shadow" / "builtin"
        monkeypatch.setattr(loader, "builtin_profile_dir", lambda: builtin)
        node = NodeConfig(path=None, profiles=("base",), profile_dirs=(str(etc),))
        library = ProfileLibrary.for_node(node)
        assert library.dirs == (etc, builtin)
        assert library.load("base").description == "the local copy in profiles.d"

    def test_names_that_are_not_profile_names_never_reach_the_filesystem(self):
        library = ProfileLibrary([PROFILES / "sub"])
        assert library.find("../profiles/base") is None
        assert library.find("") is None

    def test_loaded_profiles_are_cached(self):
        library = ProfileLibrary([PROFILES])
        assert library.load("web") is library.load("web")

    def test_an_unknown_name_lists_the_searched_directories(self, tmp_path):
        library = ProfileLibrary([tmp_path / "a", tmp_path / "b"])
        with pytest.raises(ConfigError) as excinfo:
            library.load("web")
        assert f"a web.yaml in {tmp_path}/a, {tmp_path}/b" in str(excinfo.value)

    def test_the_builtin_dir_is_the_checkouts_profiles_folder(self):
        repo_profiles = Path(loader.__file__).resolve().parents[2] / "profiles"
        expected = repo_profiles if repo_profiles.is_dir() else Path("/usr/share/nodenetd/profiles")
        assert builtin_profile_dir() == expected
