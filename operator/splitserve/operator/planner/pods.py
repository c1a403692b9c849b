"""Pod templates of the workers and the router: probes, drain, ports, security, resources."""

from __future__ import annotations

from typing import Any

from splitserve.api import ModelSpec, SplitPoolSpec
from splitserve.api.names import ANNOTATION_CONFIG_HASH
from splitserve.operator.planner.config import CONFIG_DIR, CONFIG_KEY, MODEL_DIR
from splitserve.operator.planner.merge import merge_override

GPU_RESOURCE = "nvidia.com/gpu"
RUN_AS_USER = 10001
WORKER_CONTAINER = "worker"
ROUTER_CONTAINER = "router"
MODEL_CHECK_CONTAINER = "model-check"
MODEL_FETCH_CONTAINER = "model-fetch"
MODEL_VOLUME = "model"
TLS_DIR = "/etc/splitserve/tls"
TMP_VOLUME = "tmp"
TMP_DIR = "/tmp"
LISTEN_ALL = "0.0.0.0"  # in a pod the probes, peers and the router connect through the pod IP
# The root filesystem is read-only: home and every cache live in the /tmp emptyDir.
WRITABLE_ENV = {"HOME": TMP_DIR, "XDG_CACHE_HOME": f"{TMP_DIR}/cache",
                "TORCHINDUCTOR_CACHE_DIR": f"{TMP_DIR}/cache/torchinductor",
                "TRITON_CACHE_DIR": f"{TMP_DIR}/cache/triton",
                "HF_HOME": f"{TMP_DIR}/cache/huggingface"}

_FIELD_ENV = [
    ("POD_NAME", "metadata.name"),
    ("POD_NAMESPACE", "metadata.namespace"),
    ("POD_IP", "status.podIP"),
    ("NODE_NAME", "spec.nodeName"),
]


def container_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def field_env(extra: dict[str, str]) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}} for name, path in _FIELD_ENV
    ]
    env += [{"name": k, "value": v} for k, v in extra.items()]
    return env


def probes(port: str, drain_seconds: int) -> dict[str, Any]:
    """Readiness, liveness and startup probes plus a preStop drain that blocks until the
    worker has finished (or handed back) its sequences."""
    return {
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": port},
            "periodSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": port},
            "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 6,
        },
        "startupProbe": {
            "httpGet": {"path": "/healthz", "port": port},
            "periodSeconds": 5, "timeoutSeconds": 5, "failureThreshold": 120,
        },
        "lifecycle": {
            "preStop": {
                "httpGet": {"path": f"/drain?timeout={drain_seconds}", "port": port},
            },
        },
    }


def resource_requirements(requests: dict[str, Any] | None, limits: dict[str, Any] | None,
                          gpus: int) -> dict[str, Any]:
    def convert(block: dict[str, Any] | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in (block or {}).items():
            out["ephemeral-storage" if key == "ephemeralStorage" else key] = value
        return out

    req, lim = convert(requests), convert(limits)
    if gpus:
        req[GPU_RESOURCE] = str(gpus)
        lim[GPU_RESOURCE] = str(gpus)
    result: dict[str, Any] = {}
    if req:
        result["requests"] = req
    if lim:
        result["limits"] = lim
    return result


def model_volume(model: ModelSpec) -> tuple[dict[str, Any], list[dict[str, Any]], str | None]:
    """(volume, init containers that prepare it, subPath of the mount)."""
    source = model.source
    if source.host_path is not None:
        volume = {"name": MODEL_VOLUME, "hostPath": {"path": source.host_path,
                                                     "type": "Directory"}}
        return volume, [], None
    if source.pvc is not None:
        volume = {"name": MODEL_VOLUME, "persistentVolumeClaim": {
            "claimName": source.pvc.claim_name, "readOnly": True}}
        return volume, [], source.pvc.sub_path
    image = source.image
    if image is None:
        raise ValueError("model.source must set exactly one of pvc, hostPath, image")
    fetch = {
        "name": MODEL_FETCH_CONTAINER,
        "image": image.reference,
        "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", f'cp -a "{image.path}/." {MODEL_DIR}/'],
        "volumeMounts": [{"name": MODEL_VOLUME, "mountPath": MODEL_DIR}],
        "securityContext": container_security(),
    }
    return {"name": MODEL_VOLUME, "emptyDir": {}}, [fetch], None


def model_check(model: ModelSpec, image: str, pull_policy: str,
                mount: dict[str, Any]) -> dict[str, Any]:
    """An init container that fails with a clear termination message when the weights are
    missing, so the status can say ModelNotFound instead of a crash loop."""
    script = (
        f'test -f {MODEL_DIR}/config.json || {{ echo "model not found: no config.json in '
        f'{_describe_source(model)}" > /dev/termination-log; exit 1; }}'
    )
    return {
        "name": MODEL_CHECK_CONTAINER,
        "image": image,
        "imagePullPolicy": pull_policy,
        "command": ["sh", "-c", script],
        "volumeMounts": [mount],
        "securityContext": container_security(),
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"},
                      "limits": {"cpu": "100m", "memory": "64Mi"}},
    }


def model_parts(model: ModelSpec, image: str, pull_policy: str
                ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """What a pod needs to read the weights at MODEL_DIR: (volume, init containers, the
    read-only mount for the main container). Workers and the router share it."""
    volume, init, sub_path = model_volume(model)
    mount: dict[str, Any] = {"name": MODEL_VOLUME, "mountPath": MODEL_DIR, "readOnly": True}
    if sub_path:
        mount["subPath"] = sub_path
    return volume, [*init, model_check(model, image, pull_policy, mount)], mount


def writable_tmp() -> tuple[dict[str, Any], dict[str, Any]]:
    """(volume, mount) of /tmp: the only writable place under a read-only root filesystem
    (HOME and the caches point into it)."""
    return ({"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "1Gi"}},
            {"name": TMP_VOLUME, "mountPath": TMP_DIR})


def _describe_source(model: ModelSpec) -> str:
    source = model.source
    if source.host_path is not None:
        return f"hostPath {source.host_path}"
    if source.pvc is not None:
        return f"pvc {source.pvc.claim_name}/{source.pvc.sub_path or ''}"
    if source.image is None:
        return "an unset model source"
    return f"image {source.image.reference}:{source.image.path}"


def worker_args(spec: SplitPoolSpec) -> list[str]:
    """The worker's command line; everything else it reads from the config document (the
    model, the role's engine limits, kvTransfer). The one gRPC port serves generation,
    control and KV transfer; it is the port named `kv` in the pod and the pool Service."""
    args = [
        "worker", "--role", spec.role, "--config", f"{CONFIG_DIR}/{CONFIG_KEY}",
        "--model", MODEL_DIR, "--host", LISTEN_ALL, "--http-port", str(spec.http_port),
        "--grpc-port", str(spec.kv_port), "--drain-timeout", str(spec.drain_seconds),
    ]
    if spec.tls_secret_name:
        args += ["--tls-dir", TLS_DIR]
    return args


def worker_pod_template(spec: SplitPoolSpec, pod_labels: dict[str, str]) -> dict[str, Any]:
    volume, init, mount = model_parts(spec.model, spec.image, spec.image_pull_policy)
    tmp_volume, tmp_mount = writable_tmp()
    volumes: list[dict[str, Any]] = [
        volume,
        {"name": "config", "configMap": {"name": spec.config_map_name}},
        tmp_volume,
    ]
    mounts = [mount, {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}, tmp_mount]
    if spec.tls_secret_name:
        volumes.append({"name": "tls", "secret": {"secretName": spec.tls_secret_name}})
        mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
    res = spec.resources
    container: dict[str, Any] = {
        "name": WORKER_CONTAINER,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "args": worker_args(spec),
        "ports": [
            {"name": "http", "containerPort": spec.http_port, "protocol": "TCP"},
            {"name": "kv", "containerPort": spec.kv_port, "protocol": "TCP"},
        ],
        "env": field_env({"SPLITSERVE_SERVICE": spec.service, "SPLITSERVE_ROLE": spec.role,
                           **WRITABLE_ENV}),
        "resources": resource_requirements(
            res.requests.to_wire() if res.requests else None,
            res.limits.to_wire() if res.limits else None, res.gpus),
        "volumeMounts": mounts,
        "securityContext": container_security(),
        **probes("http", spec.drain_seconds),
    }
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "initContainers": init,
        "volumes": volumes,
        "securityContext": pod_security(),
        "terminationGracePeriodSeconds": spec.drain_seconds + 15,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
    }
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod_spec["tolerations"] = [t.to_wire() for t in spec.tolerations]
    if spec.priority_class_name:
        pod_spec["priorityClassName"] = spec.priority_class_name
    template = {
        "metadata": {
            "labels": dict(pod_labels),
            "annotations": {
                ANNOTATION_CONFIG_HASH: spec.config_hash,
                "kubectl.kubernetes.io/default-container": WORKER_CONTAINER,
            },
        },
        "spec": pod_spec,
    }
    return merge_override(template, spec.pod_template_override)
