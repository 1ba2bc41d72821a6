"""The Kubernetes manifests (deploy/k8s): every file, and the base and gpu overlay as kustomize
renders them, valid against the Kubernetes API schemas (offline, strict: an unknown field fails),
and wired together: Services and autoscaling find their pods, probes and settings are the ones the
images serve and read."""

from __future__ import annotations

import copy
import functools
import os
import shutil
import subprocess

import kubernetes_validate
import pytest
import yaml

from fbmr.serving.settings import FacadeSettings
from tests.helpers import REPO_ROOT

K8S = REPO_ROOT / "deploy" / "k8s"
# The oldest Kubernetes the manifests are meant for (every API they use is GA there).
KUBERNETES_VERSION = "1.29.0"
IMAGE_VARIABLES = {"FBMR_HOST", "FBMR_PORT", "FBMR_WORKERS"}


def _validate(resources: list[dict]) -> None:
    for resource in resources:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def _render(path: str) -> list[dict]:
    """kustomize's output for deploy/k8s/PATH, by kubectl's built-in kustomize or kustomize."""
    return copy.deepcopy(_rendered(path))


@functools.cache
def _rendered(path: str) -> list[dict]:
    if kubectl := shutil.which("kubectl"):
        command = [kubectl, "kustomize", str(K8S / path)]
    elif kustomize := shutil.which("kustomize"):
        command = [kustomize, "build", str(K8S / path)]
    else:
        message = "neither kubectl nor kustomize is installed: the overlays cannot be rendered"
        if os.environ.get("CI"):  # CI's machines ship kubectl: never let rendering go untested
            pytest.fail(message)
        pytest.skip(message)
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return [r for r in yaml.safe_load_all(out.stdout) if r]


def _one(resources: list[dict], kind: str, name: str) -> dict:
    (found,) = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    return found


def _container(deployment: dict, name: str) -> dict:
    (found,) = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name
    ]
    return found


# kustomization.yaml is kustomize's own file, not a Kubernetes resource
BASE_FILES = sorted(p.name for p in (K8S / "base").glob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("path", BASE_FILES)
def test_every_base_file_is_valid_kubernetes(path: str) -> None:
    resources = [r for r in yaml.safe_load_all((K8S / "base" / path).read_text()) if r]
    assert resources
    _validate(resources)


def test_a_typo_in_a_manifest_fails_validation() -> None:
    deployment = _one(_render("base"), "Deployment", "fbmr-facade")
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.fixture(scope="module", params=["base", "overlays/gpu", "overlays/live-catalogue"])
def rendered(request: pytest.FixtureRequest) -> list[dict]:
    return _render(request.param)


def test_rendered_manifests_are_valid_kubernetes(rendered: list[dict]) -> None:
    # the live catalogue adds the index volume every facade pod shares, and its compaction
    kinds = sorted(
        r["kind"] for r in rendered if r["kind"] not in ("PersistentVolumeClaim", "CronJob")
    )
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "Deployment",
            "HorizontalPodAutoscaler",
            "NetworkPolicy",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Service",
            "Service",
            "ServiceAccount",
        ]
    )
    _validate(rendered)


def test_services_autoscaler_and_budget_select_their_pods(rendered: list[dict]) -> None:
    for name in ("fbmr-triton", "fbmr-facade"):
        deployment = _one(rendered, "Deployment", name)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        service = _one(rendered, "Service", name)
        assert service["spec"]["selector"].items() <= labels.items()
        port_names = {
            p["name"]
            for c in deployment["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", [])
        }
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= port_names
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        scraped = int(annotations["prometheus.io/port"])
        assert scraped in {
            p["containerPort"]
            for c in deployment["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", [])
        }
    facade_labels = _one(rendered, "Deployment", "fbmr-facade")["spec"]["template"]["metadata"][
        "labels"
    ]
    hpa = _one(rendered, "HorizontalPodAutoscaler", "fbmr-facade")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "fbmr-facade",
    }
    assert hpa["spec"]["minReplicas"] >= 2
    budget = _one(rendered, "PodDisruptionBudget", "fbmr-facade")
    assert budget["spec"]["selector"]["matchLabels"].items() <= facade_labels.items()
    assert budget["spec"]["minAvailable"] < hpa["spec"]["minReplicas"]


def test_probes_are_the_ones_the_servers_answer(rendered: list[dict]) -> None:
    triton = _container(_one(rendered, "Deployment", "fbmr-triton"), "triton")
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    facade = _container(_one(rendered, "Deployment", "fbmr-facade"), "facade")
    assert facade["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert facade["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for container in (triton, facade):
        assert "cpu" in container["resources"]["requests"]
        assert "memory" in container["resources"]["limits"]


def test_the_facade_gets_known_settings_and_its_key_from_a_secret(rendered: list[dict]) -> None:
    deployment = _one(rendered, "Deployment", "fbmr-facade")
    env = {e["name"]: e for e in _container(deployment, "facade")["env"]}
    settings = {f"FBMR_{name.upper()}" for name in FacadeSettings.model_fields}
    assert set(env) <= settings | IMAGE_VARIABLES, set(env) - settings - IMAGE_VARIABLES
    assert "value" not in env["FBMR_API_KEY"]
    assert env["FBMR_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "fbmr-api-key"
    host, port = env["FBMR_TRITON_URL"]["value"].split(":")
    triton = _one(rendered, "Service", "fbmr-triton")
    assert host == "fbmr-triton"
    assert int(port) == next(p["port"] for p in triton["spec"]["ports"] if p["name"] == "grpc")
    mounts = {m["mountPath"] for m in _container(deployment, "facade")["volumeMounts"]}
    assert {env["FBMR_MODEL_REPOSITORY"]["value"], env["FBMR_INDEX_DIR"]["value"]} <= mounts


def test_pods_run_as_non_root(rendered: list[dict]) -> None:
    for deployment in [r for r in rendered if r["kind"] == "Deployment"]:
        assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def test_only_the_gpu_overlay_puts_triton_on_a_gpu() -> None:
    for path, image, gpus in (
        ("base", "fbmr-triton-cpu", None),
        ("overlays/gpu", "fbmr-triton-gpu", 1),
    ):
        triton = _container(_one(_render(path), "Deployment", "fbmr-triton"), "triton")
        assert triton["image"].split(":")[0] == image
        assert triton["resources"]["limits"].get("nvidia.com/gpu") == gpus
        cache = [m for m in triton["volumeMounts"] if m["mountPath"] == "/tmp/fbmr-trt-cache"]
        assert bool(cache) == (gpus is not None)


def test_the_live_catalogue_overlay_shares_one_writable_index_across_facade_pods() -> None:
    rendered = _render("overlays/live-catalogue")
    deployment = _one(rendered, "Deployment", "fbmr-facade")
    spec = deployment["spec"]["template"]["spec"]
    (index,) = [v for v in spec["volumes"] if v["name"] == "index"]
    claim = _one(rendered, "PersistentVolumeClaim", index["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"] and "emptyDir" not in index
    mounts = {m["name"]: m for m in _container(deployment, "facade")["volumeMounts"]}
    assert not mounts["index"].get("readOnly", False)
    # nothing else writes the index: no S3 sync of it, at start or beside the facade
    assert "sync-index" not in {c["name"] for c in spec["containers"]}
    for init in spec["initContainers"]:
        assert "index" not in {m["name"] for m in init["volumeMounts"]}
    env = {e["name"]: e for e in _container(deployment, "facade")["env"]}
    assert env["FBMR_MILVUS_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    # the hourly compaction writes the same volume, one run at a time, with the same Milvus
    compaction = _one(rendered, "CronJob", "fbmr-index-compact")
    assert compaction["spec"]["concurrencyPolicy"] == "Forbid"
    job = _pod(compaction)
    (compact,) = job["containers"]
    assert compact["command"][:3] == ["fbmr", "index", "compact"]
    assert {"name": "index", "persistentVolumeClaim": index["persistentVolumeClaim"]} in job[
        "volumes"
    ]
    assert {e["name"] for e in compact["env"]} == {"FBMR_MILVUS_TOKEN", "FBMR_MILVUS_URI"}
    base = _one(_render("base"), "Deployment", "fbmr-facade")
    base_mounts = {m["name"]: m for m in _container(base, "facade")["volumeMounts"]}
    assert base_mounts["index"]["readOnly"] is True  # the base keeps its read-only copy


def _pod(workload: dict) -> dict:
    """The pod spec of a Deployment or a CronJob."""
    spec = workload["spec"]
    return (spec["jobTemplate"]["spec"] if workload["kind"] == "CronJob" else spec)["template"][
        "spec"
    ]


def test_triton_takes_traffic_from_the_facade_only(rendered: list[dict]) -> None:
    policy = _one(rendered, "NetworkPolicy", "fbmr-triton")
    triton = _one(rendered, "Deployment", "fbmr-triton")
    labels = triton["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    facade_labels = _one(rendered, "Deployment", "fbmr-facade")["spec"]["template"]["metadata"][
        "labels"
    ]
    by_port: dict[str, list[dict]] = {}
    for rule in policy["spec"]["ingress"]:
        assert rule.get("from"), "a rule without sources would admit every pod"
        for port in rule["ports"]:
            by_port.setdefault(port["port"], []).extend(rule["from"])
    assert set(by_port) == {"http", "grpc", "metrics"}
    for port in ("http", "grpc"):  # inference and the control plane
        selectors = [source["podSelector"]["matchLabels"] for source in by_port[port]]
        assert any(s.items() <= facade_labels.items() for s in selectors)
        assert all("namespaceSelector" not in source for source in by_port[port])
    assert all("namespaceSelector" in source for source in by_port["metrics"])


def test_triton_and_the_facade_share_the_control_plane_key(rendered: list[dict]) -> None:
    refs = []
    for name, container in (("fbmr-triton", "triton"), ("fbmr-facade", "facade")):
        env = {
            e["name"]: e for e in _container(_one(rendered, "Deployment", name), container)["env"]
        }
        ref = env["FBMR_TRITON_ADMIN_KEY"]["valueFrom"]["secretKeyRef"]
        assert not ref.get("optional", False)
        refs.append((ref["name"], ref["key"]))
    assert refs[0] == refs[1]


def test_pods_drop_capabilities_and_only_the_s3_containers_hold_its_token(
    rendered: list[dict],
) -> None:
    for workload in [r for r in rendered if r["kind"] in ("Deployment", "CronJob")]:
        pod = _pod(workload)
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"] + pod.get("initContainers", []):
            context = container["securityContext"]
            assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert "ephemeral-storage" in container["resources"]["limits"], container["name"]
            mounts = {m["name"] for m in container.get("volumeMounts", [])}
            assert ("aws-token" in mounts) == container["image"].startswith("amazon/aws-cli")
        for volume in pod["volumes"]:
            if "emptyDir" in volume and volume["emptyDir"] is not None:
                assert "sizeLimit" in volume["emptyDir"], volume["name"]
    account = _one(rendered, "ServiceAccount", "fbmr")
    assert account["automountServiceAccountToken"] is False
    assert "annotations" not in account.get("metadata", {}) or not any(
        "role-arn" in key for key in account["metadata"]["annotations"]
    )
