"""ansible/kubernetes/nodenetd-daemonset.yaml: the node's network, exactly NET_ADMIN and
NET_RAW, the config from its ConfigMap (and valid), the metrics port annotated for scraping."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nodenetd.config.loader import validate_files
from nodenetd.config.metrics import parse_listen
from nodenetd.kernel import sysctl

MANIFEST = Path(__file__).resolve().parents[2] / "ansible" / "kubernetes" / \
    "nodenetd-daemonset.yaml"


@pytest.fixture(scope="module")
def docs() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all(MANIFEST.read_text()) if doc}


@pytest.fixture(scope="module")
def pod(docs: dict[str, dict]) -> dict:
    return docs["DaemonSet"]["spec"]["template"]


def container(pod: dict) -> dict:
    [only] = pod["spec"]["containers"]
    return only


def test_runs_in_the_nodes_network_namespace(pod: dict) -> None:
    assert pod["spec"]["hostNetwork"] is True
    assert pod["spec"]["dnsPolicy"] == "ClusterFirstWithHostNet"


def test_holds_net_admin_and_net_raw_and_nothing_else(pod: dict) -> None:
    context = container(pod)["securityContext"]
    assert context["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN", "NET_RAW"]}
    assert context["privileged"] is False
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert "hostPID" not in pod["spec"] and "hostIPC" not in pod["spec"]


def test_sysctls_go_through_the_nodes_proc_sys_net(pod: dict) -> None:
    """Runtimes mount /proc/sys read-only: nodenetd writes the hostPath mount instead."""
    env = {e["name"]: e["value"] for e in container(pod)["env"]}
    mounts = {m["name"]: m["mountPath"] for m in container(pod)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["proc-sys-net"]["hostPath"]["path"] == "/proc/sys/net"
    assert mounts["proc-sys-net"] == env[sysctl.PROC_SYS_ENV] + "/net"


def test_config_comes_from_the_configmap(docs: dict[str, dict], pod: dict) -> None:
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    names = {v["configMap"]["name"] for v in volumes.values() if "configMap" in v}
    assert names == {docs["ConfigMap"]["metadata"]["name"]}
    args = container(pod)["command"]
    assert args[args.index("--config") + 1] == "/etc/nodenetd/nodenetd.yaml"


def test_the_configmap_config_is_valid(docs: dict[str, dict], tmp_path: Path) -> None:
    data = docs["ConfigMap"]["data"]
    profiles = tmp_path / "profiles.d"
    profiles.mkdir()
    node = yaml.safe_load(data["nodenetd.yaml"])
    assert node["profile_dirs"] == ["/etc/nodenetd/profiles.d"]
    for key, text in data.items():
        if key != "nodenetd.yaml":
            (profiles / key).write_text(text)
    config = tmp_path / "nodenetd.yaml"
    config.write_text(data["nodenetd.yaml"].replace("/etc/nodenetd/profiles.d", str(profiles)))
    assert validate_files([config, *sorted(profiles.iterdir())]) == []


def test_metrics_port_is_annotated_for_scraping(docs: dict[str, dict], pod: dict) -> None:
    annotations = pod["metadata"]["annotations"]
    [port] = [p for p in container(pod)["ports"] if p["name"] == "metrics"]
    node = yaml.safe_load(docs["ConfigMap"]["data"]["nodenetd.yaml"])
    _, listen_port = parse_listen(node["metrics"]["listen"])
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == port["containerPort"] == listen_port
