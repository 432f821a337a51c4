"""The deployment files: the Kubernetes manifests under deploy/k8s, the Dockerfile and .dockerignore.

No cluster and no Docker engine needed. Each manifest is validated against the Kubernetes JSON schemas that
kubernetes-validate ships (offline, strict: an unknown or misspelled field fails), then the files are checked
against each other (probes, ports, Secret and ConfigMap keys, the image's user and command, the shutdown
timings) and the ConfigMap's streamcar.yaml is loaded by the real config loader.
"""

from __future__ import annotations

import copy
import json
import re
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from streamcar.config import Config, parse_config
from streamcar.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# The oldest release the manifests are written for: the preStop `sleep` action is on by default from 1.30.
MIN_KUBERNETES = "1.30"
SCHEMA_VERSIONS = (MIN_KUBERNETES, kubernetes_validate.latest_version())
# What the final commit and the producer's flush may take after shutdown_timeout, and the service's own stop.
SHUTDOWN_MARGIN = 10

Manifest = dict[str, Any]


def _documents() -> list[tuple[str, Manifest]]:
    found = []
    for path in sorted(K8S.rglob("*.y*ml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                found.append((path.relative_to(K8S).as_posix(), doc))
    return found


DOCUMENTS = _documents()
RESOURCES = [(file, doc) for file, doc in DOCUMENTS if doc.get("kind") != "Kustomization"]


def _one(kind: str, name: str | None = None) -> Manifest:
    found = [doc for _, doc in RESOURCES if doc["kind"] == kind and name in (None, doc["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _pod() -> Manifest:
    spec: Manifest = _one("Deployment")["spec"]["template"]["spec"]
    return spec


def _toolbox() -> Manifest:
    spec: Manifest = _one("Pod", "streamcar-toolbox")["spec"]
    return spec


def _pods() -> dict[str, Manifest]:
    return {"deployment": _pod(), "toolbox": _toolbox()}


def _container(name: str) -> Manifest:
    found: list[Manifest] = [c for c in _pod()["containers"] if c["name"] == name]
    assert len(found) == 1, f"expected one container {name}"
    return found[0]


def _secret_keys() -> dict[str, set[str]]:
    return {
        doc["metadata"]["name"]: set(doc.get("data", {})) | set(doc.get("stringData", {}))
        for _, doc in RESOURCES
        if doc["kind"] == "Secret"
    }


def _port(container: Manifest, port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    return int(number)


def _sidecar_env() -> dict[str, str]:
    """The streamcar container's environment, with a stand-in for each value taken from a Secret or the Pod."""
    env = {}
    for var in _container("streamcar").get("env", []):
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        field = var.get("valueFrom", {}).get("fieldRef")
        if ref:
            env[var["name"]] = f"{ref['name']}.{ref['key']}-value"
        elif field:
            env[var["name"]] = "orders-service-7d4f9c6b8-x2x9q"  # the Pod's name, as a Deployment makes them
        else:
            env[var["name"]] = var["value"]
    return env


def test_each_replica_is_a_static_member_named_after_its_pod() -> None:
    (pipeline,) = _config().pipelines.values()
    assert pipeline.consume.instance_id == "orders-service-7d4f9c6b8-x2x9q"
    (var,) = [v for v in _container("streamcar")["env"] if v["name"] == "POD_NAME"]
    assert var["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def _config_text() -> str:
    text: str = _one("ConfigMap", "orders-streamcar")["data"]["streamcar.yaml"]
    return text


def _config() -> Config:
    # Only the container's own environment: a ${VAR} it does not set would fail the Pod at start.
    try:
        return parse_config(_config_text(), env=_sidecar_env(), source="configmap.yaml:streamcar.yaml")
    except ConfigError as exc:
        pytest.fail("\n".join([str(exc), *exc.problems]))


def _mounted(container: Manifest, file: str) -> tuple[str, str, str]:
    """Which volume source provides ``file`` in ``container``: ``(kind, name, key)``, e.g. a ConfigMap's key."""
    path = PurePosixPath(file)
    mounts = [m for m in container.get("volumeMounts", []) if path.is_relative_to(m["mountPath"])]
    assert mounts, f"nothing is mounted at {file} in container {container['name']}"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    relative = path.relative_to(mount["mountPath"]).as_posix()
    (volume,) = [v for v in _pod()["volumes"] if v["name"] == mount["name"]]
    for kind, name_field in (("configMap", "name"), ("secret", "secretName")):
        if kind in volume:
            source = volume[kind]
            items = {item["path"]: item["key"] for item in source.get("items", [])}
            assert relative in items or not items, f"{volume['name']} does not project {relative}"
            key = items.get(relative, relative)
            return kind, source[name_field], key
    raise AssertionError(f"volume {volume['name']} is neither a ConfigMap nor a Secret")


# --- the manifests on their own -------------------------------------------------------------------------------


def test_every_manifest_names_its_api_kind_and_name() -> None:
    assert {doc["kind"] for _, doc in RESOURCES} >= {"Deployment", "ConfigMap", "Secret", "PodDisruptionBudget"}
    for file, doc in DOCUMENTS:
        assert doc.get("apiVersion"), file
        assert doc.get("kind"), file
        if doc["kind"] != "Kustomization":
            assert doc.get("metadata", {}).get("name"), file


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
@pytest.mark.parametrize("doc", [doc for _, doc in RESOURCES], ids=[f"{file}:{doc['kind']}" for file, doc in RESOURCES])
def test_manifest_matches_the_kubernetes_schema(doc: Manifest, version: str) -> None:
    kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda d: d["spec"]["template"]["spec"]["containers"][1].update(imagee="x"), "Additional properties"),
        (lambda d: d["spec"]["template"]["spec"]["containers"][1].pop("name"), "'name' is a required property"),
        (lambda d: d["spec"].update(replicas="3"), "is not of type 'integer'"),
    ],
    ids=["misspelled-field", "missing-field", "wrong-type"],
)
def test_the_schema_check_catches_mistakes(damage: Any, why: str) -> None:
    broken = copy.deepcopy(_one("Deployment"))
    damage(broken)
    with pytest.raises(kubernetes_validate.ValidationError, match=why):
        kubernetes_validate.validate(broken, MIN_KUBERNETES, strict=True)


def test_kustomization_applies_everything_but_the_placeholders_and_the_toolbox() -> None:
    (kustomization,) = [doc for _, doc in DOCUMENTS if doc["kind"] == "Kustomization"]
    listed = set(kustomization["resources"])
    files = {file for file, doc in RESOURCES}
    assert all((K8S / file).is_file() for file in listed)
    # `kubectl apply -k` must never overwrite real credentials with placeholders.
    assert listed == files - {"secret.yaml", "toolbox.yaml"}  # the toolbox is started by hand, for a while
    assert all(doc["kind"] == "Secret" for file, doc in RESOURCES if file == "secret.yaml")


def test_secret_placeholders_are_marked_as_such() -> None:
    text = (K8S / "secret.yaml").read_text(encoding="utf-8")
    assert "EXAMPLE PLACEHOLDERS" in text
    for _, doc in RESOURCES:
        if doc["kind"] == "Secret":
            assert "data" not in doc, "placeholders belong in stringData, readable as such"
            assert all("REPLACE-ME" in value for value in doc["stringData"].values())


def test_selectors_match_the_pod_labels() -> None:
    deployment = _one("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for selector in (deployment["spec"]["selector"], _one("PodDisruptionBudget")["spec"]["selector"]):
        assert selector["matchLabels"].items() <= labels.items()


# --- the Pod --------------------------------------------------------------------------------------------------


def test_the_pod_holds_the_service_and_the_sidecar() -> None:
    assert [c["name"] for c in _pod()["containers"]] == ["orders-service", "streamcar"]
    assert _container("streamcar")["image"] == "streamcar:0.1.0"


@pytest.mark.parametrize("pod", ["deployment", "toolbox"])
def test_every_container_is_pinned_limited_and_locked_down(pod: str) -> None:
    for container in _pods()[pod]["containers"]:
        _check_container(container)


def _check_container(container: Manifest) -> None:
    name = container["name"]
    image = container["image"]
    assert re.search(r":[\w.-]+$|@sha256:", image), f"{name}: pin the image by tag or digest"
    assert not image.endswith(":latest"), f"{name}: pin the image by tag or digest"
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert {"cpu", "memory"} <= container["resources"]["limits"].keys()
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]


@pytest.mark.parametrize("pod", ["deployment", "toolbox"])
def test_the_pod_runs_as_the_images_non_root_user(pod: str) -> None:
    security = _pods()[pod]["securityContext"]
    assert security["runAsNonRoot"] is True
    assert f"{security['runAsUser']}:{security['runAsGroup']}" == _final_stage_value("USER")
    assert _pods()[pod]["automountServiceAccountToken"] is False


def test_probes_hit_the_admin_endpoints_on_the_configured_port() -> None:
    sidecar, admin = _container("streamcar"), _config().admin
    assert admin.host == "0.0.0.0", "on loopback the kubelet's probes cannot reach the admin endpoints"
    expected = {"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/healthz"}
    for probe, path in expected.items():
        get = sidecar[probe]["httpGet"]
        assert (get["path"], _port(sidecar, get["port"])) == (path, admin.port), probe
    annotations = _one("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert (annotations["prometheus.io/port"], annotations["prometheus.io/path"]) == (str(admin.port), "/metrics")
    assert f"{admin.port}" in _final_stage_value("EXPOSE").split()


def test_every_secret_reference_exists() -> None:
    keys = _secret_keys()
    refs = [
        (var["valueFrom"]["secretKeyRef"]["name"], var["valueFrom"]["secretKeyRef"]["key"])
        for pod in _pods().values()
        for container in pod["containers"]
        for var in container.get("env", [])
        if "secretKeyRef" in var.get("valueFrom", {})
    ]
    for volume in [volume for pod in _pods().values() for volume in pod["volumes"]]:
        if "secret" in volume:
            secret = volume["secret"]
            refs += [(secret["secretName"], item["key"]) for item in secret["items"]]
    assert refs
    missing = [ref for ref in refs if ref[1] not in keys.get(ref[0], set())]
    assert missing == [], "referenced, but not in secret.yaml"


def test_every_mounted_config_map_key_exists() -> None:
    config_maps = {doc["metadata"]["name"]: doc["data"] for _, doc in RESOURCES if doc["kind"] == "ConfigMap"}
    volumes = [volume["configMap"] for pod in _pods().values() for volume in pod["volumes"] if "configMap" in volume]
    assert volumes
    for source in volumes:
        assert {item["key"] for item in source["items"]} <= config_maps[source["name"]].keys()


def test_the_config_map_holds_a_valid_streamcar_config() -> None:
    config, env = _config(), _sidecar_env()
    security = config.kafka.security
    assert security is not None
    assert (security.protocol, security.sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert security.username == env["KAFKA_USER"]
    assert security.password is not None
    assert security.password.get_secret_value() == env["KAFKA_PASSWORD"]
    from_secrets = {var["name"] for var in _container("streamcar")["env"] if "secretKeyRef" in var.get("valueFrom", {})}
    from_pod = {var["name"] for var in _container("streamcar")["env"] if "fieldRef" in var.get("valueFrom", {})}
    assert set(re.findall(r"\$\{(\w+)", _config_text())) == from_secrets | from_pod
    assert (from_secrets, from_pod) == ({"KAFKA_USER", "KAFKA_PASSWORD", "SERVICE_TOKEN"}, {"POD_NAME"})
    (pipeline,) = config.pipelines.values()
    assert pipeline.call.headers["Authorization"] == f"Bearer {env['SERVICE_TOKEN']}"
    url = pipeline.call.url
    service_port = _port(_container("orders-service"), "http")
    assert url.startswith(f"http://127.0.0.1:{service_port}/"), "the service is in the same Pod"


def test_the_sidecar_reads_the_mounted_config_and_ca() -> None:
    sidecar = _container("streamcar")
    config_file = sidecar["args"][-1]
    assert sidecar["args"] == _final_stage_exec("CMD")
    assert _mounted(sidecar, config_file) == ("configMap", "orders-streamcar", "streamcar.yaml")
    security = _config().kafka.security
    assert security is not None
    assert security.ca_file is not None
    kind, name, key = _mounted(sidecar, security.ca_file.as_posix())
    assert (kind, name) == ("secret", "streamcar-kafka")
    assert key in _secret_keys()[name]


def test_the_toolbox_has_the_sidecars_image_config_and_credentials() -> None:
    (tools,) = _toolbox()["containers"]
    sidecar = _container("streamcar")
    assert tools["image"] == sidecar["image"]
    assert [var for var in sidecar["env"] if "valueFrom" in var] == tools["env"]
    assert tools["volumeMounts"] == [m for m in sidecar["volumeMounts"] if m["name"] != "tmp"]
    assert _toolbox()["volumes"] == [v for v in _pod()["volumes"] if v["name"] != "tmp"]


def test_the_service_outlives_the_sidecars_drain() -> None:
    shutdown = max(pipeline.shutdown_timeout for pipeline in _config().pipelines.values())
    timeout = max(pipeline.call.timeout for pipeline in _config().pipelines.values())
    service_stays = _container("orders-service")["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = _pod()["terminationGracePeriodSeconds"]
    assert timeout < shutdown, "a call in flight at SIGTERM must be able to finish within the drain"
    assert shutdown + SHUTDOWN_MARGIN <= service_stays, "the service must stay up until the drain has committed"
    assert service_stays + SHUTDOWN_MARGIN <= grace, "the service needs time to stop after its preStop sleep"
    assert "preStop" not in _container("streamcar").get("lifecycle", {}), "streamcar drains on SIGTERM at once"


# --- the image ------------------------------------------------------------------------------------------------

DOCKERFILE = (ROOT / "Dockerfile").read_text(encoding="utf-8")


def _instructions(text: str) -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` pairs, continuation lines joined and comments dropped, as Docker reads them."""
    found, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        instruction, _, args = (current + line).partition(" ")
        found.append((instruction.upper(), " ".join(args.split())))
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return found


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction, args in _instructions(DOCKERFILE):
        if instruction == "FROM":
            stages.append([])
        assert stages, "the Dockerfile must start with FROM"
        stages[-1].append((instruction, args))
    return stages


def _final_stage_value(instruction: str) -> str:
    values = [args for name, args in _stages()[-1] if name == instruction]
    assert values, f"the final stage has no {instruction}"
    return values[-1]


def _final_stage_exec(instruction: str) -> list[str]:
    try:  # the exec form: streamcar is PID 1 and gets SIGTERM itself, not a shell that would swallow it
        value = json.loads(_final_stage_value(instruction))
    except ValueError:
        pytest.fail(f"{instruction} must use the exec (JSON) form")
    assert isinstance(value, list)
    assert all(isinstance(part, str) for part in value)
    return value


def test_the_image_builds_on_a_pinned_slim_python() -> None:
    stages = _stages()
    assert len(stages) >= 2, "a builder stage and a final stage"
    for stage in stages:
        base = stage[0][1].split()[0]
        assert re.fullmatch(r"python:3\.\d+-slim(@sha256:[0-9a-f]{64})?", base), base
    assert "pip wheel" in " ".join(args for name, args in stages[0] if name == "RUN")


def test_the_final_stage_installs_the_wheel_and_no_build_tools() -> None:
    final = _stages()[-1]
    runs = " ".join(args for name, args in final if name == "RUN")
    assert "from=builder" in runs
    assert "streamcar-*.whl" in runs
    assert "--only-binary=:all:" in runs
    assert "constraints.txt" in runs
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    assert ("[tracing]" in runs) == ("tracing" in extras), "the image ships the tracing extra"
    for tool in ("apt-get", "apk ", "gcc", "build-essential", "hatchling", "pip wheel", "-m build", "git "):
        assert tool not in runs, f"{tool!r} in the final stage"
    assert not any(name in ("COPY", "ADD") and "src" in args.split() for name, args in final), "no source tree"


def test_the_image_runs_streamcar_as_a_numeric_non_root_user() -> None:
    user = _final_stage_value("USER")  # the last one: the user the container runs as
    assert re.fullmatch(r"[1-9][0-9]*(:[0-9]+)?", user), "numeric and not root, so runAsNonRoot can check it"
    assert _final_stage_exec("ENTRYPOINT") == ["streamcar"]
    assert _final_stage_exec("CMD") == ["run", "-c", "/etc/streamcar/streamcar.yaml"]


def test_the_dockerfile_fetches_nothing_from_urls() -> None:
    for name, args in _instructions(DOCKERFILE):
        assert not (name == "ADD" and re.search(r"https?://|git@", args)), args
        assert not (name == "RUN" and re.search(r"\b(curl|wget)\b", args)), args


# --- .dockerignore --------------------------------------------------------------------------------------------


def _glob(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(\*\*/|\*\*|\*|\?|\[[^]]*\])", pattern)
    special = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
    return re.compile(
        "".join(
            special.get(part, part if part.startswith("[") and part.endswith("]") else re.escape(part))
            for part in parts
        )
    )


def _dockerignored(path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides; ``!`` includes."""
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()]
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        if not pattern or pattern.startswith("#"):
            continue
        regex = _glob(pattern.removeprefix("!").strip("/"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            excluded = not pattern.startswith("!")
    return excluded


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        ".mypy_cache/3.11/cache.db",
        ".pytest_cache/v/cache/lastfailed",
        ".ruff_cache/CACHEDIR.TAG",
        ".hypothesis/examples/x",
        "src/streamcar/__pycache__/cli.cpython-312.pyc",
        "src/streamcar/cli.pyc",
        "tests/unit/test_deploy.py",
        "bench/results/latest.json",
        "dist/streamcar-0.1.0-py3-none-any.whl",
    ],
)
def test_dockerignore_keeps_out(path: str) -> None:
    assert _dockerignored(path)


@pytest.mark.parametrize("path", ["pyproject.toml", "README.md", "constraints.txt", "src/streamcar/cli.py"])
def test_dockerignore_lets_in_what_the_build_uses(path: str) -> None:
    assert not _dockerignored(path)
    assert (ROOT / path).exists()
