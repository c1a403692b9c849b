"""The pods the operator renders start the real data plane: their arguments, environment and
config document are parsed by the worker's and the router's own parsers, so the two sides can
never drift apart."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from splitserve.operator.planner import plan_pool, plan_service
from splitserve.operator.planner.config import CONFIG_DIR, CONFIG_KEY, MODEL_DIR
from splitserve.router import config as router_config
from splitserve.router.discovery import KV_PORT_NAME
from splitserve.worker import config as worker_config

NAMESPACE = "ml"
POD_FIELDS = {"metadata.name": "pod-0", "metadata.namespace": NAMESPACE,
              "status.podIP": "10.244.0.7", "spec.nodeName": "node-1"}


def service(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": {"name": "llama-3-8b", "source": {"hostPath": "/srv/llama"},
                  "dtype": "float32", "maxContext": 512},
        "image": "splitserve/dataplane:1",
        "prefill": {"replicas": 1, "drainSeconds": 20,
                    "engine": {"maxBatchTokens": 1024, "maxRunningSeqs": 8, "blockSize": 32,
                               "kvCacheBlocks": 64}},
        "decode": {"replicas": 2, "engine": {"maxBatchTokens": 256, "maxRunningSeqs": 16}},
        "router": {"replicas": 1, "port": 9000, "policy": "round-robin",
                   "shortPromptThreshold": 0, "maxRetries": 3},
        "kvTransfer": {"port": 6000, "compression": "int8", "transferTimeoutMs": 7000,
                       "maxMessageBytes": 1 << 25},
    }
    for key, value in spec.items():
        base[key] = {**base[key], **value} if isinstance(base.get(key), dict) else value
    return {"apiVersion": "splitserve.io/v1alpha1", "kind": "SplitService",
            "metadata": {"name": "llama", "namespace": NAMESPACE, "uid": "svc-uid",
                         "generation": 1},
            "spec": base}


def by_kind(objs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objs}


def pod_of(deployment: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return pod


def worker_pod(objs: list[dict[str, Any]], role: str) -> dict[str, Any]:
    pool = copy.deepcopy(by_kind(objs)[("SplitPool", f"llama-{role}")])
    pool["metadata"].update(uid=f"pool-{role}", generation=1)
    return pod_of(plan_pool(pool))


def environment(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet would set it."""
    env = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            env[item["name"]] = POD_FIELDS[item["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def localized(args: list[str], config_file: Path) -> list[str]:
    """The arguments with the mounted config document's path pointing at a local copy."""
    mounted = f"{CONFIG_DIR}/{CONFIG_KEY}"
    assert mounted in args, args
    return [str(config_file) if a == mounted else a for a in args]


@pytest.fixture
def rendered(tmp_path: Path) -> tuple[list[dict[str, Any]], Path]:
    objs = plan_service(service())
    config_file = tmp_path / CONFIG_KEY
    config_file.write_text(by_kind(objs)[("ConfigMap", "llama-config")]["data"][CONFIG_KEY])
    return objs, config_file


def mounts_of(container: dict[str, Any]) -> dict[str, str]:
    return {m["mountPath"]: m["name"] for m in container["volumeMounts"]}


@pytest.mark.parametrize("role", ["prefill", "decode"])
def test_worker_pod_starts_a_worker_the_worker_accepts(
        rendered: tuple[list[dict[str, Any]], Path], role: str) -> None:
    objs, config_file = rendered
    pod = worker_pod(objs, role)
    (container,) = pod["containers"]
    args = container["args"]
    assert args[0] == "worker"
    cfg = worker_config.from_args(localized(args[1:], config_file), environment(container))
    spec = service()["spec"]
    engine = spec[role]["engine"]
    assert cfg.role == role and cfg.pool == role
    assert cfg.host == "0.0.0.0"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert cfg.grpc_port == ports[KV_PORT_NAME] == 6000
    assert cfg.http_port == ports["http"]
    assert cfg.model == MODEL_DIR and mounts_of(container)[MODEL_DIR] == "model"
    assert mounts_of(container)[CONFIG_DIR] == "config"
    assert cfg.model_name == "llama-3-8b"
    assert cfg.engine.dtype == "float32" and cfg.engine.max_model_len == 512
    assert cfg.engine.max_num_batched_tokens == engine["maxBatchTokens"]
    assert cfg.engine.max_num_seqs == engine["maxRunningSeqs"]
    assert cfg.engine.block_size == engine.get("blockSize", 16)
    assert cfg.namespace == NAMESPACE and cfg.service == "llama"
    assert cfg.reservation_timeout_s == 7.0 and cfg.max_message_bytes == 1 << 25
    assert cfg.tls_dir == ""
    if role == "prefill":
        assert cfg.engine.num_blocks == 64 and cfg.drain_timeout_s == 20


def test_workers_and_router_with_tls_read_the_mounted_secret(tmp_path: Path) -> None:
    objs = plan_service(service(kvTransfer={"tlsSecretName": "kv-tls"}))
    config_file = tmp_path / CONFIG_KEY
    config_file.write_text(by_kind(objs)[("ConfigMap", "llama-config")]["data"][CONFIG_KEY])
    (container,) = worker_pod(objs, "decode")["containers"]
    cfg = worker_config.from_args(localized(container["args"][1:], config_file),
                                  environment(container))
    assert mounts_of(container)[cfg.tls_dir] == "tls"
    router = pod_of(by_kind(objs)[("Deployment", "llama-router")])
    (container,) = router["containers"]
    rcfg = router_config.from_args(localized(container["args"][1:], config_file),
                                   environment(container))
    assert mounts_of(container)[rcfg.tls_dir] == "tls"
    assert rcfg.tls_server_name == cfg.tls_server_name
    assert {"name": "tls", "secret": {"secretName": "kv-tls"}} in router["volumes"]


def test_pool_services_expose_the_port_the_router_discovers(
        rendered: tuple[list[dict[str, Any]], Path]) -> None:
    objs, _ = rendered
    for role in ("prefill", "decode"):
        ports = by_kind(objs)[("Service", f"llama-{role}")]["spec"]["ports"]
        kv = next(p for p in ports if p["name"] == KV_PORT_NAME)
        assert kv["targetPort"] == KV_PORT_NAME and kv["port"] == 6000


def test_router_pod_starts_a_router_the_router_accepts(
        rendered: tuple[list[dict[str, Any]], Path]) -> None:
    objs, config_file = rendered
    deployment = by_kind(objs)[("Deployment", "llama-router")]
    pod = pod_of(deployment)
    (container,) = pod["containers"]
    assert container["args"][0] == "router"
    env = environment(container)
    cfg = router_config.from_args(localized(container["args"][1:], config_file), env)
    assert cfg.host == "0.0.0.0"
    assert cfg.port == container["ports"][0]["containerPort"] == 9000
    assert cfg.discovery == "endpointslices"
    assert cfg.namespace == NAMESPACE
    assert (cfg.prefill_service, cfg.decode_service) == ("llama-prefill", "llama-decode")
    assert ("Service", cfg.prefill_service) in by_kind(objs)
    assert ("Service", cfg.decode_service) in by_kind(objs)
    assert cfg.model == MODEL_DIR and mounts_of(container)[MODEL_DIR] == "model"
    assert cfg.model_name == "llama-3-8b" and cfg.max_context == 512
    assert cfg.policy == "round-robin" and cfg.short_prompt_threshold == 0
    assert cfg.max_retries == 3 and cfg.compression == "int8"
    assert cfg.reservation_timeout_ms == 7000
    assert cfg.block_size == 16  # the decode pool's blocks, which the router reserves
    assert cfg.tls_dir == ""
    # the same config document without the environment still names the pool Services
    bare = router_config.from_args(localized(container["args"][1:], config_file),
                                   {"POD_NAMESPACE": NAMESPACE})
    assert (bare.prefill_service, bare.decode_service) == ("llama-prefill", "llama-decode")


def test_router_pod_reads_the_weights_like_the_workers(
        rendered: tuple[list[dict[str, Any]], Path]) -> None:
    objs, _ = rendered
    router = pod_of(by_kind(objs)[("Deployment", "llama-router")])
    worker = worker_pod(objs, "decode")
    model = next(v for v in router["volumes"] if v["name"] == "model")
    assert model == next(v for v in worker["volumes"] if v["name"] == "model")
    (mount,) = [m for m in router["containers"][0]["volumeMounts"] if m["name"] == "model"]
    assert mount["readOnly"] is True
    assert [c["name"] for c in router["initContainers"]] == ["model-check"]


def test_only_the_router_gets_an_api_token(
        rendered: tuple[list[dict[str, Any]], Path]) -> None:
    objs, _ = rendered
    router = pod_of(by_kind(objs)[("Deployment", "llama-router")])
    assert router["automountServiceAccountToken"] is True
    assert router["serviceAccountName"] == "llama-router"
    for role in ("prefill", "decode"):
        pod = worker_pod(objs, role)
        assert pod["automountServiceAccountToken"] is False
        assert "serviceAccountName" not in pod


@pytest.mark.parametrize("kind", ["worker", "router"])
def test_read_only_root_leaves_home_and_caches_writable(
        rendered: tuple[list[dict[str, Any]], Path], kind: str) -> None:
    objs, _ = rendered
    pod = (pod_of(by_kind(objs)[("Deployment", "llama-router")]) if kind == "router"
           else worker_pod(objs, "prefill"))
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    env = environment(container)
    tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
    assert "emptyDir" in next(v for v in pod["volumes"] if v["name"] == tmp["name"])
    assert not tmp.get("readOnly")
    for name in ("HOME", "XDG_CACHE_HOME", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR",
                 "HF_HOME"):
        assert env[name].startswith("/tmp"), name


def test_router_with_api_keys_reads_the_mounted_secret(tmp_path: Path) -> None:
    objs = plan_service(service(router={"apiKeySecret": {"name": "llama-keys",
                                                         "key": "accepted"}}))
    config_file = tmp_path / CONFIG_KEY
    config_file.write_text(by_kind(objs)[("ConfigMap", "llama-config")]["data"][CONFIG_KEY])
    router = pod_of(by_kind(objs)[("Deployment", "llama-router")])
    (container,) = router["containers"]
    cfg = router_config.from_args(localized(container["args"][1:], config_file),
                                  environment(container))
    keys = Path(cfg.api_keys_file)
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(keys.parent)]
    assert mount["readOnly"] and "subPath" not in mount  # subPath mounts never refresh
    (volume,) = [v for v in router["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"] == {"secretName": "llama-keys",
                                "items": [{"key": "accepted", "path": keys.name}]}
    # the workers never see the keys
    for role in ("prefill", "decode"):
        pod = worker_pod(objs, role)
        assert all(v.get("secret", {}).get("secretName") != "llama-keys"
                   for v in pod["volumes"])


def test_router_without_api_keys_requires_none(
        rendered: tuple[list[dict[str, Any]], Path]) -> None:
    objs, config_file = rendered
    (container,) = pod_of(by_kind(objs)[("Deployment", "llama-router")])["containers"]
    cfg = router_config.from_args(localized(container["args"][1:], config_file),
                                  environment(container))
    assert cfg.api_keys_file == ""
