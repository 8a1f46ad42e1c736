"""The deploy files confine what they run: the API at Kubernetes' restricted level, workers with
only what their job sandbox needs, and the network open only between the service's parts.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import pytest

from support.deploy_files import DEPLOY, DOCKERFILES, compose, dockerfile, k8s_object, k8s_objects, pod_containers

# the system calls bubblewrap makes to build a sandbox (workers/jail.py)
SANDBOX_SYSCALLS = {"clone", "clone3", "unshare", "setns", "mount", "umount2", "pivot_root", "prctl", "setresuid"}
# kernel surfaces no job needs, refused by the worker's seccomp profile
REFUSED_SYSCALLS = {"bpf", "ptrace", "keyctl", "kexec_load", "init_module", "perf_event_open", "io_uring_setup"}
RESTRICTED_WORKLOADS = ("qat-api", "qat-dispatcher", "qat-migrate")


def _pod(name: str) -> dict[str, Any]:
    workload = next(o for o in k8s_objects() if o["kind"] in ("Deployment", "Job") and o["metadata"]["name"] == name)
    return dict(workload["spec"]["template"]["spec"])


def test_no_container_keeps_a_capability_or_may_gain_privileges() -> None:
    for workload, container in pod_containers():
        context = container.get("securityContext", {})
        assert context.get("allowPrivilegeEscalation") is False, workload["metadata"]["name"]
        assert context.get("capabilities", {}).get("drop") == ["ALL"], workload["metadata"]["name"]
        assert not context.get("capabilities", {}).get("add") and not context.get("privileged")


@pytest.mark.parametrize("name", RESTRICTED_WORKLOADS)
def test_api_side_pods_meet_the_restricted_pod_security_level(name: str) -> None:
    """The checks of Kubernetes' restricted profile that a manifest decides."""
    pod = _pod(name)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"].get("runAsUser", 1) != 0
    assert pod["securityContext"]["seccompProfile"]["type"] in ("RuntimeDefault", "Localhost")
    assert not any(pod.get(key) for key in ("hostNetwork", "hostPID", "hostIPC"))
    assert not any("hostPath" in volume for volume in pod.get("volumes", []))
    assert pod.get("hostUsers", True) is True
    for container in pod["containers"]:
        context = container["securityContext"]
        assert context.get("procMount", "Default") == "Default"
        assert "appArmorProfile" not in context and "appArmorProfile" not in pod["securityContext"]
        assert not container.get("ports") or all("hostPort" not in port for port in container["ports"])


def _seccomp_profile() -> dict[str, Any]:
    return dict(json.loads((DEPLOY / "seccomp" / "qat-worker.json").read_text()))


def test_worker_pods_get_what_the_sandbox_needs_and_no_more() -> None:
    pod = _pod("qat-worker")
    (container,) = pod["containers"]
    profile = pod["securityContext"]["seccompProfile"]
    assert profile == {"type": "Localhost", "localhostProfile": "profiles/qat-worker.json"}
    assert pod["hostUsers"] is False, "bubblewrap's user namespaces nest in the pod's own"
    assert container["securityContext"]["procMount"] == "Unmasked", "bubblewrap mounts a /proc of its own"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert not any(pod.get(key) for key in ("hostNetwork", "hostPID", "hostIPC"))
    assert not any("hostPath" in volume for volume in pod.get("volumes", []))


def test_the_worker_seccomp_profile_allows_the_sandbox_and_refuses_what_no_job_needs() -> None:
    profile = _seccomp_profile()
    refused = {name for rule in profile["syscalls"] if rule["action"] != "SCMP_ACT_ALLOW" for name in rule["names"]}
    assert profile["defaultAction"] == "SCMP_ACT_ALLOW" and "SCMP_ARCH_X86_64" in profile["architectures"]
    assert REFUSED_SYSCALLS <= refused
    assert not SANDBOX_SYSCALLS & refused, "bubblewrap could not build the job sandbox"


def test_workers_may_reach_only_the_database_the_broker_and_the_store() -> None:
    policy = k8s_object("NetworkPolicy", "qat-worker")
    worker = k8s_object("Deployment", "qat-worker")
    assert (
        policy["spec"]["podSelector"]["matchLabels"].items() <= worker["spec"]["template"]["metadata"]["labels"].items()
    )
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"} and policy["spec"]["ingress"] == []
    ports = {port["port"] for rule in policy["spec"]["egress"] for port in rule["ports"]}
    config = k8s_object("ConfigMap", "qat-settings")["data"]
    secret = k8s_object("Secret", "qat-secrets")["stringData"]
    used = {
        urlsplit(url).port
        for url in (secret["QAT_DATABASE_URL"], config["QAT_BROKER_URL"], config["QAT_S3_ENDPOINT_URL"])
    }
    assert ports == used | {53}, "each backend's port (from the settings) and DNS, nothing else"
    for rule in policy["spec"]["egress"]:
        assert all("ipBlock" not in peer for peer in rule["to"]), "no address range: only the named pods"


def test_compose_workers_run_in_the_sandbox_profile_on_an_internal_network() -> None:
    services = compose()["services"]
    networks = compose()["networks"]
    for name, service in services.items():
        if service.get("image", "").startswith("qat-"):
            assert service["cap_drop"] == ["ALL"] and "no-new-privileges:true" in service["security_opt"], name
        outside = [net for net in service.get("networks", []) if not networks[net].get("internal")]
        assert outside == ([] if name != "api" else ["frontend"]), f"{name} reaches beyond the backend network"
    for name in (n for n in services if n.startswith("worker-")):
        options = services[name]["security_opt"]
        (seccomp,) = [option.partition("=")[2] for option in options if option.startswith("seccomp=")]
        assert (DEPLOY / seccomp).resolve() == (DEPLOY / "seccomp" / "qat-worker.json").resolve()
        assert {"apparmor=unconfined", "systempaths=unconfined"} <= set(options)


def test_the_worker_image_installs_bubblewrap() -> None:
    installs = [
        rest
        for keyword, rest in dockerfile(DOCKERFILES["qat-worker"])
        if keyword == "RUN" and "apt-get install" in rest
    ]
    assert any("bubblewrap" in command.split() for command in installs)
