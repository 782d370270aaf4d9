"""The node config's metrics section: defaults, what it becomes, and every mistake reported at
its line, above all a listen address beyond loopback without TLS and basic auth."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pytest

from nodenetd.config import loader
from nodenetd.config.loader import load_node_config, validate_files
from nodenetd.config.metrics import (
    DEFAULT_PORT,
    MetricsSettings,
    TextfileSettings,
    TlsSettings,
    is_loopback,
    parse_listen,
)
from nodenetd.metrics import __main__ as metrics_main
from nodenetd.metrics.auth import PasswordCheck, hash_password, hash_problem

HEAD = "profiles: [base]\nprofile_dirs: [profiles]\n"  # 2 lines
PBKDF2 = hash_password("s3cret", iterations=10_000)
BCRYPT = "$2b$04$bHjzRxxm8WW43Fpi5pHqP.jipujIrVqSXYIhO2ysWWcbaqeyvJuSe"  # "s3cret", cost 4


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Path:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "base.yaml").write_text("description: the one good profile\n")
    monkeypatch.setattr(loader, "builtin_profile_dir", lambda: tmp_path / "no-builtin")
    return tmp_path


def write(workspace: Path, metrics: str) -> Path:
    path = workspace / "nodenetd.yaml"
    path.write_text(HEAD + "metrics:\n" + textwrap.indent(textwrap.dedent(metrics), "  "))
    return path


def issues(workspace: Path, metrics: str) -> list[str]:
    return [str(issue) for issue in validate_files([write(workspace, metrics)])]


def test_without_a_section_metrics_are_served_on_loopback(workspace):
    path = workspace / "nodenetd.yaml"
    path.write_text(HEAD)
    node = load_node_config(path)
    assert node.metrics is None
    default = MetricsSettings()
    assert default.listen == ("127.0.0.1", DEFAULT_PORT) and not 9100 <= DEFAULT_PORT <= 9999
    assert default.tls is None and not default.basic_auth and default.textfile is None


def test_a_full_section_becomes_typed_settings(workspace):
    path = write(workspace, f"""\
        listen: "[::]:9999"
        tls: {{cert: /etc/nodenetd/tls.crt, key: /etc/nodenetd/tls.key, client_ca: /etc/ca.pem}}
        basic_auth: {{prometheus: "{PBKDF2}", other: "{BCRYPT}"}}
        textfile: {{path: /var/lib/prometheus/node-exporter/nodenetd.prom, interval: 30}}
        interfaces: {{include: ["veth*"], exclude: [lo]}}
        """)
    metrics = load_node_config(path).metrics
    assert metrics.listen == ("::", 9999)
    assert metrics.tls == TlsSettings("/etc/nodenetd/tls.crt", "/etc/nodenetd/tls.key",
                                      "/etc/ca.pem")
    assert dict(metrics.basic_auth) == {"prometheus": PBKDF2, "other": BCRYPT}
    assert metrics.textfile == TextfileSettings(
        "/var/lib/prometheus/node-exporter/nodenetd.prom", 30.0)
    assert (metrics.include, metrics.exclude) == (("veth*",), ("lo",))


def test_listen_false_turns_http_off(workspace):
    assert load_node_config(write(workspace, "listen: false\n")).metrics.listen is None


@pytest.mark.parametrize("listen", ["0.0.0.0:10037", ":10037", "[::]:10037",
                                    "192.0.2.5:10037"])
def test_beyond_loopback_needs_tls_and_basic_auth(workspace, listen):
    (problem,) = issues(workspace, f'listen: "{listen}"\n')
    assert "nodenetd.yaml:4" in problem
    assert "beyond loopback" in problem and "tls and basic_auth" in problem
    assert "allow_insecure: true" in problem
    (problem,) = issues(workspace, f'listen: "{listen}"\nbasic_auth: {{p: "{PBKDF2}"}}\n')
    assert "needs tls" in problem and "basic_auth" not in problem.split("(")[0]


def test_beyond_loopback_with_tls_and_auth_or_allow_insecure_is_fine(workspace):
    assert issues(workspace, f"""\
        listen: "0.0.0.0:10037"
        tls: {{cert: /c.pem, key: /k.pem}}
        basic_auth: {{prometheus: "{PBKDF2}"}}
        """) == []
    assert issues(workspace, 'listen: "0.0.0.0:10037"\nallow_insecure: true\n') == []
    assert issues(workspace, 'listen: "[::1]:10037"\n') == []
    assert issues(workspace, 'listen: "localhost:10037"\n') == []


@pytest.mark.parametrize(("listen", "why"), [
    ("10037", "HOST:PORT"), ("127.0.0.1:70000", "out of range"),
    ("example.com:10037", "not an IP address"), ("::1:10037", "in brackets")])
def test_bad_listen_addresses(workspace, listen, why):
    found = issues(workspace, f'listen: "{listen}"\n')
    assert found and all("nodenetd.yaml:4" in p for p in found)
    assert any(why in p or "listen" in p for p in found), found


def test_passwords_must_be_hashes(workspace):
    (problem,) = issues(workspace, 'basic_auth: {prometheus: "plain text"}\n')
    assert "nodenetd.yaml:4" in problem and "basic_auth.prometheus" in problem
    assert "hash-password" in problem
    weak = "pbkdf2_sha256$1000$AAAA$AAAA"
    (problem,) = issues(workspace, f'basic_auth: {{p: "{weak}"}}\n')
    assert "10000 iterations" in problem


def test_schema_mistakes_are_reported_with_their_line(workspace):
    found = issues(workspace, "listn: 127.0.0.1:1\ntextfile: {path: relative.prom}\n")
    text = "\n".join(found)
    assert "nodenetd.yaml:4: metrics.listn: unknown key" in text and "listen" in text
    assert "nodenetd.yaml:5: metrics.textfile.path" in text and "ending in .prom" in text


def test_listen_parsing():
    assert parse_listen("127.0.0.1:1") == ("127.0.0.1", 1)
    assert parse_listen("[fe80::1]:2") == ("fe80::1", 2)
    assert parse_listen(":3") == ("", 3)
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("") and not is_loopback("0.0.0.0") and not is_loopback("::")


def test_password_checks_are_correct_and_cached():
    check = PasswordCheck({"prometheus": PBKDF2, "legacy": BCRYPT})
    assert check.check("prometheus", "s3cret")
    assert check.check("prometheus", "s3cret")  # cached
    assert not check.check("prometheus", "wrong")
    assert not check.check("nobody", "s3cret")
    assert check.check("legacy", "s3cret") and not check.check("legacy", "S3cret")
    assert not PasswordCheck({})
    assert hash_problem(PBKDF2) is None and hash_problem(BCRYPT) is None


def test_hash_password_command(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("hunter2\n"))
    assert metrics_main.main(["hash-password", "--iterations", "10000"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("pbkdf2_sha256$10000$")
    assert PasswordCheck({"u": printed}).check("u", "hunter2")
