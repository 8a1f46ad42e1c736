"""The files in ``deploy/`` validate, and they agree with the code they run.

No image is built and no cluster is needed: the compose file is checked against the
compose-spec schema (after interpolating ``env.example`` as ``docker compose`` would), every
Kubernetes object against the API schema in strict mode, and then what the schemas cannot
see: every command is one ``qat`` really has, every ``QAT_*`` variable is one the code reads
and its value parses, the probes hit real routes, workers get exactly one GPU each, the
dispatcher's slots match the workers, and the images install requirements.lock (the worker its torch).
"""

from __future__ import annotations

import copy
import importlib.resources
import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
import jsonschema
import kubernetes_validate
import pytest
import yaml
from flask import Flask

from service.api.app import BLUEPRINTS
from service.errors import BadSetting
from service.settings import Settings
from support.deploy_files import (
    DEPLOY,
    DOCKERFILES,
    K8S,
    ROOT,
    compose,
    compose_file,
    dockerfile,
    env_example,
    interpolate,
    k8s_object,
    k8s_objects,
    pod_containers,
)
from workers.cli import main as qat_main

# the oldest Kubernetes still common on managed clusters, and the newest the validator ships
K8S_VERSIONS = ("1.33.0", kubernetes_validate.latest_version())
# commands the deploy files run: the variables their click options read count as settings too
DEPLOYED_COMMANDS = ("serve", "dispatcher", "worker", "db")


# --- reading the files -----------------------------------------------------------------


def exec_form(path: Path, keyword: str) -> list[str]:
    """The last ENTRYPOINT or CMD, which must be JSON (exec form) so SIGTERM reaches qat, not a shell."""
    values = [rest for kw, rest in dockerfile(path) if kw == keyword]
    assert values, f"{path.name} has no {keyword}"
    try:
        argv = json.loads(values[-1])
    except json.JSONDecodeError:
        pytest.fail(f"{path.name}: {keyword} {values[-1]} is shell form; a shell would swallow SIGTERM")
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    return argv


def image_argv(image: str, args: list[str] | None) -> list[str]:
    """What a container of ``image`` runs: the Dockerfile's ENTRYPOINT, then ``args`` or its CMD."""
    path = DOCKERFILES[image.partition(":")[0]]
    return exec_form(path, "ENTRYPOINT") + (exec_form(path, "CMD") if args is None else args)


def parse_qat(argv: list[str], env: Mapping[str, str] | None = None) -> click.Command:
    """Parse ``argv`` as the ``qat`` console script would, down to the subcommand; raises on a bad one."""
    assert argv[0] == "qat", argv
    command: click.Command = qat_main
    args = argv[1:]
    while isinstance(command, click.Group):
        assert args, f"{argv}: {command.name} needs a subcommand"
        name, *args = args
        sub = command.get_command(click.Context(command), name)
        assert sub is not None, f"{argv}: qat has no command {name!r}"
        command = sub
    with pytest.MonkeyPatch.context() as patch:
        for key, value in (env or {}).items():
            patch.setenv(key, value)
        command.make_context(command.name, list(args))
    return command


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def locked(name: str) -> str:
    (pin,) = [line for line in (ROOT / "requirements.lock").read_text().splitlines() if line.startswith(f"{name}==")]
    return pin


def routes() -> set[str]:
    app = Flask(__name__)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    return {rule.rule for rule in app.url_map.iter_rules()}


def reads(name: str, tmp: Path) -> bool:
    """Whether the code reads environment variable ``name``: Settings reacts to a bogus value."""
    try:
        return Settings.from_env({name: "\x7f"}, cwd=tmp) != Settings.from_env({}, cwd=tmp)
    except BadSetting as exc:
        return exc.field == name


def option_env_vars() -> set[str]:
    """The variables the deployed commands' click options read (``QAT_WORKER_SLOTS``)."""
    names: set[str] = set()

    def walk(command: click.Command) -> None:
        for param in command.params:
            names.update([param.envvar] if isinstance(param.envvar, str) else param.envvar or [])
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    for name in DEPLOYED_COMMANDS:
        command = qat_main.get_command(click.Context(qat_main), name)
        assert command is not None, name
        walk(command)
    return names


# --- compose -----------------------------------------------------------------------------


def compose_schema() -> dict[str, Any]:
    vendored = importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return json.loads(vendored.read_text())


def test_compose_file_is_valid_compose_spec() -> None:
    jsonschema.Draft202012Validator(compose_schema()).validate(compose())


def test_compose_schema_check_is_strict() -> None:
    broken = compose()
    broken["services"]["worker-0"]["deploy"]["resources"]["reservations"]["devices"][0]["gpus"] = 1
    with pytest.raises(jsonschema.ValidationError, match="gpus"):
        jsonschema.Draft202012Validator(compose_schema()).validate(broken)


def test_env_example_sets_what_compose_requires_and_nothing_it_ignores() -> None:
    used: set[str] = set()
    interpolate(compose_file(), env_example(), used)  # raises on a required variable it lacks
    assert set(env_example()) <= used, f"env.example sets variables compose never reads: {set(env_example()) - used}"


def test_compose_commands_are_real_qat_commands() -> None:
    services = compose()["services"]
    built = {name: s for name, s in services.items() if "build" in s}
    assert {"api", "dispatcher", "migrate", "worker-0"} <= set(built)
    for name, service in built.items():
        image = service["image"]
        assert DOCKERFILES[image.partition(":")[0]].relative_to(ROOT).as_posix() == service["build"]["dockerfile"]
        assert (DEPLOY / service["build"]["context"]).resolve() == ROOT, name
        parse_qat(image_argv(image, service.get("command")), service.get("environment"))


def test_every_qat_variable_in_compose_is_read_and_parses(tmp_path: Path) -> None:
    known = option_env_vars()
    services = compose()["services"] | {"env.example": {"environment": env_example()}}
    for name, service in services.items():
        env = {k: str(v) for k, v in service.get("environment", {}).items()}
        unknown = [k for k in env if k.startswith("QAT_") and k not in known and not reads(k, tmp_path)]
        assert not unknown, f"{name}: the code reads no {unknown}"
        if "QAT_DATABASE_URL" in env:
            settings = Settings.from_env(env, cwd=tmp_path)
            assert settings.database_url.startswith("postgresql://") and settings.broker_url.startswith("redis://")
            assert settings.s3_endpoint_url == "http://minio:9000"


def test_one_worker_per_gpu_and_the_dispatcher_admits_that_many() -> None:
    services = compose()["services"]
    workers = {name: s for name, s in services.items() if s.get("image", "").startswith("qat-worker:")}
    gpus = []
    for name, worker in workers.items():
        (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"], name
        assert len(device["device_ids"]) == 1 and "count" not in device, f"{name} must own exactly one GPU"
        gpus += device["device_ids"]
        assert parse_qat(image_argv(worker["image"], worker.get("command"))).name == "worker"
    assert len(set(gpus)) == len(gpus) == len(workers) >= 1, f"GPUs shared between workers: {gpus}"
    assert int(services["dispatcher"]["environment"]["QAT_WORKER_SLOTS"]) == len(workers)


def has_healthcheck(service: Mapping[str, Any]) -> bool:
    """Its own healthcheck, or its image's HEALTHCHECK."""
    image = service.get("image", "").partition(":")[0]
    from_image = image in DOCKERFILES and any(kw == "HEALTHCHECK" for kw, _ in dockerfile(DOCKERFILES[image]))
    return "healthcheck" in service or from_image


def test_compose_start_order_cannot_deadlock() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for target, rule in service.get("depends_on", {}).items():
            dependency = services[target]
            if rule["condition"] == "service_healthy":
                assert has_healthcheck(dependency), f"{name} waits for {target} to be healthy; it has no healthcheck"
            if rule["condition"] == "service_completed_successfully":
                assert dependency.get("restart") == "no", f"{target} is a one-shot: restart must be 'no'"
        if "QAT_DATABASE_URL" in service.get("environment", {}) and name != "migrate":
            assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully", name


# --- Kubernetes ------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_manifest_validates_strictly(version: str) -> None:
    objects = k8s_objects()
    assert {o["kind"] for o in objects} >= {"Namespace", "ConfigMap", "Secret", "Job", "Deployment", "Service"}
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


def test_manifest_validation_is_strict() -> None:
    worker = copy.deepcopy(k8s_object("Deployment", "qat-worker"))
    worker["spec"]["template"]["spec"]["containers"][0]["gpus"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, K8S_VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest_in_one_namespace() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization["resources"]) == sorted(files)
    (namespace,) = [o["metadata"]["name"] for o in k8s_objects() if o["kind"] == "Namespace"]
    assert all(o["metadata"].get("namespace") == namespace for o in k8s_objects() if o["kind"] != "Namespace")
    assert {i["name"] for i in kustomization["images"]} == set(DOCKERFILES)


def test_selectors_services_and_references_match() -> None:
    for obj in k8s_objects():
        if obj["kind"] == "Deployment":
            labels = obj["spec"]["template"]["metadata"]["labels"]
            assert obj["spec"]["selector"]["matchLabels"].items() <= labels.items(), obj["metadata"]["name"]
    service, api = k8s_object("Service", "qat-api"), k8s_object("Deployment", "qat-api")
    assert service["spec"]["selector"].items() <= api["spec"]["template"]["metadata"]["labels"].items()
    (container,) = api["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)
    assert ports["http"] == int(container["args"][container["args"].index("--port") + 1])
    names = {(o["kind"], o["metadata"]["name"]) for o in k8s_objects()}
    for workload, container in pod_containers():
        for source in container.get("envFrom", []):
            kind, key = ("ConfigMap", "configMapRef") if "configMapRef" in source else ("Secret", "secretRef")
            ref = (kind, source[key]["name"])
            assert ref in names, f"{workload['metadata']['name']} reads {ref}, which no manifest defines"


def test_api_probes_hit_real_routes() -> None:
    (container,) = k8s_object("Deployment", "qat-api")["spec"]["template"]["spec"]["containers"]
    probes = [container[k]["httpGet"] for k in ("startupProbe", "livenessProbe", "readinessProbe")]
    assert {p["path"] for p in probes} <= routes()
    assert {p["port"] for p in probes} <= {port["name"] for port in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_containers_run_real_qat_commands() -> None:
    commands = {}
    for workload, container in pod_containers():
        assert "command" not in container, "keep the image's ENTRYPOINT (qat)"
        env = {e["name"]: e["value"] for e in container.get("env", [])}
        argv = image_argv(container["image"], container.get("args"))
        commands[workload["metadata"]["name"]] = parse_qat(argv, env).name
    expected = {"qat-api": "serve", "qat-dispatcher": "dispatcher", "qat-migrate": "upgrade", "qat-worker": "worker"}
    assert commands == expected


def test_every_qat_variable_in_the_manifests_is_read_and_parses(tmp_path: Path) -> None:
    config = k8s_object("ConfigMap", "qat-settings")["data"]
    secret = k8s_object("Secret", "qat-secrets")["stringData"]
    names = set(config) | set(secret)
    names |= {e["name"] for _, c in pod_containers() for e in c.get("env", [])}
    known = option_env_vars()
    unknown = sorted(n for n in names if n.startswith("QAT_") and n not in known and not reads(n, tmp_path))
    assert not unknown, f"the code reads no {unknown}"
    settings = Settings.from_env(config | secret, cwd=tmp_path)
    assert settings.database_url.startswith("postgresql://") and settings.broker_url.startswith("redis://")
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(secret), "S3 credentials belong in the Secret"
    assert not any("PASSWORD" in k or "SECRET" in k for k in config), "a secret value in the ConfigMap"


def test_worker_pods_own_one_gpu_each_and_finish_their_job_on_shutdown(tmp_path: Path) -> None:
    worker = k8s_object("Deployment", "qat-worker")
    pod = worker["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    resources = container["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert resources["requests"].get("nvidia.com/gpu", 1) == 1
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"]) and pod["nodeSelector"]
    # Celery's warm shutdown waits for the running job: far longer than Kubernetes' default 30 s
    assert pod["terminationGracePeriodSeconds"] >= 1800
    assert worker["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0, "a rollout must not need a spare GPU"
    slots = k8s_object("Deployment", "qat-dispatcher")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "QAT_WORKER_SLOTS", "value": str(worker["spec"]["replicas"])} in slots
    config = k8s_object("ConfigMap", "qat-settings")["data"]
    child = Settings.from_env(config | {"QAT_DATABASE_URL": "postgresql://x@y/z"}, cwd=tmp_path).child_memory_bytes
    assert child is not None and child < quantity_bytes(resources["limits"]["memory"]), (
        "QAT_CHILD_MEMORY_BYTES must stay under the pod's memory limit, or the kernel kills the whole worker"
    )


def quantity_bytes(quantity: str) -> int:
    """A Kubernetes memory quantity in binary units (``32Gi``) as bytes."""
    match = re.fullmatch(r"(\d+)(Ki|Mi|Gi|Ti)?", quantity)
    assert match, f"use binary units for memory: {quantity!r}"
    return int(match[1]) << {None: 0, "Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40}[match[2]]


# --- images ------------------------------------------------------------------------------


@pytest.mark.parametrize("image", sorted(DOCKERFILES))
def test_images_run_qat_as_a_non_root_user(image: str) -> None:
    path = DOCKERFILES[image]
    assert exec_form(path, "ENTRYPOINT") == ["qat"]
    parse_qat(image_argv(image, None))
    users = [rest for kw, rest in dockerfile(path) if kw == "USER"]
    assert users and users[-1] not in ("root", "0"), f"{path.name} must end as a non-root USER"


@pytest.mark.parametrize(("image", "extra"), [("qat-api", "service"), ("qat-worker", "worker")])
def test_images_install_the_lock_and_every_package(image: str, extra: str) -> None:
    """The API image is torch-free; the worker's torch is the lock's, from the CUDA index."""
    text = DOCKERFILES[image].read_text()
    assert f"pip install -c requirements.lock '.[{extra}]'" in text
    assert set(re.findall(r"torch==[\w.+]+", text)) == ({locked("torch")} if extra == "worker" else set())
    copied = {rest.split()[0].rstrip("/") for kw, rest in dockerfile(DOCKERFILES[image]) if kw == "COPY"}
    packages = {p.rstrip("*") for p in pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= copied, f"{image} leaves out {packages - copied}"
    assert "requirements.lock" in " ".join(rest for kw, rest in dockerfile(DOCKERFILES[image]) if kw == "COPY")
    allowed = {line.strip("!/ ") for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")}
    assert packages | {"pyproject.toml", "README.md", "requirements.lock"} <= allowed, (
        ".dockerignore keeps a package out of the build"
    )


def test_api_image_healthcheck_hits_a_real_route_on_the_served_port() -> None:
    path = DOCKERFILES["qat-api"]
    (check,) = [rest for kw, rest in dockerfile(path) if kw == "HEALTHCHECK"]
    url = re.search(r"http://127\.0\.0\.1:(\d+)(/\w+)", check)
    assert url and url[2] in routes()
    cmd = exec_form(path, "CMD")
    assert cmd[cmd.index("--port") + 1] == url[1] and cmd[cmd.index("--host") + 1] == "0.0.0.0"


def test_image_tags_are_the_project_version() -> None:
    version = pyproject()["project"]["version"]
    images = {s["image"] for s in compose()["services"].values() if s.get("image", "").startswith("qat-")}
    images |= {c["image"] for _, c in pod_containers()}
    assert images == {f"{name}:{version}" for name in DOCKERFILES}
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert {i["newTag"] for i in kustomization["images"]} == {version}
