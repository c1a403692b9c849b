"""A SplitService → every object it owns, as plain dicts ready to apply.

Order matters only for readability of events: RBAC, ConfigMap, Services, SplitPools, router
Deployment, PodDisruptionBudgets, NetworkPolicies. Every object carries a controller owner
reference to the SplitService, so deleting it garbage-collects everything.
"""

from __future__ import annotations

from typing import Any

from splitserve.api import SplitService, SplitServiceSpec
from splitserve.api.base import API_VERSION
from splitserve.api.names import ANNOTATION_CONFIG_HASH, Role
from splitserve.operator.planner import naming, network
from splitserve.operator.planner.config import (
    CONFIG_DIR,
    CONFIG_KEY,
    config_hash,
    engine_config,
    render_config,
)
from splitserve.operator.planner.pods import (
    LISTEN_ALL,
    ROUTER_CONTAINER,
    TLS_DIR,
    WRITABLE_ENV,
    container_security,
    field_env,
    model_parts,
    pod_security,
    probes,
    resource_requirements,
    writable_tmp,
)

WORKER_HTTP_PORT = 8080
ROUTER_DRAIN_SECONDS = 30
API_KEYS_VOLUME = "api-keys"
API_KEYS_DIR = "/etc/splitserve/api-keys"
API_KEYS_FILE = "api-keys"
DEFAULT_ROUTER_RESOURCES = {"requests": {"cpu": "100m", "memory": "128Mi"},
                            "limits": {"memory": "512Mi"}}


def parse_service(obj: dict[str, Any]) -> SplitService:
    """Validates a SplitService object; raises pydantic's ValidationError naming the field."""
    return SplitService.model_validate(
        {k: obj[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in obj}
    )


def plan_service(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Every child object of one SplitService. SplitPools carry `spec.replicas` as the seed for
    a pool that does not exist yet; the applier never writes it to an existing pool."""
    svc = parse_service(obj)
    meta = obj["metadata"]
    name, namespace = meta["name"], meta.get("namespace", "default")
    spec = svc.spec
    data = {CONFIG_KEY: render_config(engine_config(
        spec, name, namespace, naming.pool_name(name, Role.PREFILL),
        naming.pool_name(name, Role.DECODE)))}
    digest = config_hash(data)
    return [
        *_router_rbac(obj, name),
        {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": naming.child_metadata(obj, naming.config_name(name), naming.labels(name)),
            "data": data,
        },
        _headless_service(obj, name, Role.PREFILL, spec),
        _headless_service(obj, name, Role.DECODE, spec),
        _router_service(obj, name, spec),
        _split_pool(obj, name, Role.PREFILL, spec, digest),
        _split_pool(obj, name, Role.DECODE, spec, digest),
        _router_deployment(obj, name, spec, digest),
        *(_pdb(obj, name, role) for role in (Role.PREFILL, Role.DECODE, Role.ROUTER)),
        *network.network_policies(obj, name, spec, WORKER_HTTP_PORT),
    ]


def retired_children(obj: dict[str, Any]) -> list[tuple[str, str]]:
    """(kind, name) of children the spec no longer asks for and that are removed if this
    service controls them: the NetworkPolicies once `networkPolicy.enabled` is false."""
    svc = parse_service(obj)
    if svc.spec.network_policy.enabled:
        return []
    return [(network.KIND, n) for n in network.policy_names(obj["metadata"]["name"])]


def _split_pool(owner: dict[str, Any], name: str, role: Role, spec: SplitServiceSpec,
                digest: str) -> dict[str, Any]:
    pool = spec.prefill if role == Role.PREFILL else spec.decode
    template = pool.to_wire()
    for key in ("replicas", "minReplicas", "maxReplicas", "image"):
        template.pop(key, None)
    pool_spec: dict[str, Any] = {
        **template,
        "role": role.value,
        "service": name,
        "replicas": pool.replicas,
        "image": pool.image or spec.image,
        "imagePullPolicy": spec.image_pull_policy.value,
        "model": spec.model.to_wire(),
        "configMapName": naming.config_name(name),
        "configHash": digest,
        "httpPort": WORKER_HTTP_PORT,
        "kvPort": spec.kv_transfer.port,
    }
    if spec.kv_transfer.tls_secret_name:
        pool_spec["tlsSecretName"] = spec.kv_transfer.tls_secret_name
    return {
        "apiVersion": API_VERSION, "kind": "SplitPool",
        "metadata": naming.child_metadata(owner, naming.pool_name(name, role),
                                          naming.labels(name, role)),
        "spec": pool_spec,
    }


def _headless_service(owner: dict[str, Any], name: str, role: Role,
                      spec: SplitServiceSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": naming.child_metadata(owner, naming.pool_name(name, role),
                                          naming.labels(name, role)),
        "spec": {
            "clusterIP": "None",
            "selector": naming.selector(name, role),
            "ports": [
                {"name": "http", "port": WORKER_HTTP_PORT, "targetPort": "http",
                 "protocol": "TCP"},
                {"name": "kv", "port": spec.kv_transfer.port, "targetPort": "kv",
                 "protocol": "TCP"},
            ],
        },
    }


def _router_service(owner: dict[str, Any], name: str, spec: SplitServiceSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": naming.child_metadata(owner, name, naming.labels(name, Role.ROUTER)),
        "spec": {
            "type": spec.router.service_type.value,
            "selector": naming.selector(name, Role.ROUTER),
            "ports": [{"name": "http", "port": spec.router.port, "targetPort": "http",
                       "protocol": "TCP"}],
        },
    }


def router_args(spec: SplitServiceSpec) -> list[str]:
    """The router's command line; the model, the pool Services and the routing options come
    from the config document, the namespace from the pod (POD_NAMESPACE)."""
    args = ["router", "--config", f"{CONFIG_DIR}/{CONFIG_KEY}", "--host", LISTEN_ALL,
            "--port", str(spec.router.port), "--discovery", "endpointslices",
            "--drain-timeout", str(ROUTER_DRAIN_SECONDS)]
    if spec.kv_transfer.tls_secret_name:
        args += ["--tls-dir", TLS_DIR]  # the workers require the certificate (mTLS)
    if spec.router.api_key_secret:
        args += ["--api-keys-file", f"{API_KEYS_DIR}/{API_KEYS_FILE}"]
    return args


def _router_deployment(owner: dict[str, Any], name: str, spec: SplitServiceSpec,
                       digest: str) -> dict[str, Any]:
    router = spec.router
    wire = router.resources.to_wire()
    resources = (resource_requirements(wire.get("requests"), wire.get("limits"), 0)
                 if wire else DEFAULT_ROUTER_RESOURCES)
    # the router reads the tokenizer and config.json from the same weights as the workers
    model_volume, init, model_mount = model_parts(spec.model, spec.image,
                                                  spec.image_pull_policy.value)
    tmp_volume, tmp_mount = writable_tmp()
    volumes = [model_volume, {"name": "config", "configMap": {"name": naming.config_name(name)}},
               tmp_volume]
    mounts = [model_mount, {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
              tmp_mount]
    if spec.kv_transfer.tls_secret_name:
        volumes.append({"name": "tls", "secret": {"secretName": spec.kv_transfer.tls_secret_name}})
        mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
    if router.api_key_secret:
        # a whole-directory mount (no subPath), so the kubelet refreshes it when the Secret
        # changes and the router picks the new keys up
        secret = router.api_key_secret
        volumes.append({"name": API_KEYS_VOLUME, "secret": {
            "secretName": secret.name, "items": [{"key": secret.key, "path": API_KEYS_FILE}]}})
        mounts.append({"name": API_KEYS_VOLUME, "mountPath": API_KEYS_DIR, "readOnly": True})
    container: dict[str, Any] = {
        "name": ROUTER_CONTAINER,
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy.value,
        "args": router_args(spec),
        "ports": [{"name": "http", "containerPort": router.port, "protocol": "TCP"}],
        "env": field_env({
            "SPLITSERVE_SERVICE": name,
            "SPLITSERVE_ROLE": Role.ROUTER.value,
            "SPLITSERVE_PREFILL_SERVICE": naming.pool_name(name, Role.PREFILL),
            "SPLITSERVE_DECODE_SERVICE": naming.pool_name(name, Role.DECODE),
            **WRITABLE_ENV,
        }),
        "resources": resources,
        "volumeMounts": mounts,
        "securityContext": container_security(),
        **probes("http", ROUTER_DRAIN_SECONDS),
    }
    router_labels = naming.labels(name, Role.ROUTER)
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": naming.child_metadata(owner, naming.router_name(name), router_labels),
        "spec": {
            "replicas": router.replicas,
            "selector": {"matchLabels": naming.selector(name, Role.ROUTER)},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "revisionHistoryLimit": 5,
            "template": {
                "metadata": {
                    "labels": router_labels,
                    "annotations": {ANNOTATION_CONFIG_HASH: digest,
                                    "kubectl.kubernetes.io/default-container": ROUTER_CONTAINER},
                },
                "spec": {
                    "serviceAccountName": naming.router_name(name),
                    # the EndpointSlice watch authenticates with the account's token
                    "automountServiceAccountToken": True,
                    "containers": [container],
                    "initContainers": init,
                    "volumes": volumes,
                    "securityContext": pod_security(),
                    "terminationGracePeriodSeconds": ROUTER_DRAIN_SECONDS + 15,
                    "enableServiceLinks": False,
                },
            },
        },
    }


def _pdb(owner: dict[str, Any], name: str, role: Role) -> dict[str, Any]:
    target = naming.router_name(name) if role == Role.ROUTER else naming.pool_name(name, role)
    return {
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": naming.child_metadata(owner, target, naming.labels(name, role)),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": naming.selector(name, role)}},
    }


def _router_rbac(owner: dict[str, Any], name: str) -> list[dict[str, Any]]:
    account = naming.router_name(name)

    def meta() -> dict[str, Any]:
        return naming.child_metadata(owner, account, naming.labels(name, Role.ROUTER))

    namespace = meta()["namespace"]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(),
         "automountServiceAccountToken": True},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta(),
            "rules": [{"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                       "verbs": ["list", "watch"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": meta(),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
            "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
        },
    ]
