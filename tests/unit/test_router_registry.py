"""Registry state, discovery parsing, admission control, router settings."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from splitserve.router.admission import Admission
from splitserve.router.config import from_args
from splitserve.router.discovery import endpoint_addresses, parse_static, ready_addresses
from splitserve.router.errors import ApiError
from splitserve.router.registry import Registry


def stats(reg: Registry, addr: str, **kw: int | bool) -> None:
    base = dict(running=0, waiting=0, queued_prompt_tokens=0, kv_blocks_used=0,
                kv_blocks_total=100, draining=False)
    reg.record_stats(addr, **{**base, **kw})  # type: ignore[arg-type]


def test_registry_availability_follows_polls_and_drain() -> None:
    reg = Registry()
    reg.set_endpoints("decode", ["a:1", "b:1"])
    assert reg.available("decode") == []  # no work before the first poll
    stats(reg, "a:1")
    stats(reg, "b:1")
    assert [w.address for w in reg.available("decode")] == ["a:1", "b:1"]
    reg.mark_down("a:1")
    assert [w.address for w in reg.available("decode")] == ["b:1"]
    stats(reg, "a:1", running=3)
    assert reg.available("decode")[0].running == 3
    stats(reg, "b:1", draining=True)
    assert [w.address for w in reg.available("decode")] == ["a:1"]
    assert reg.available("decode", exclude={"a:1"}) == []
    reg.begin("a:1", 50)
    w = reg.available("decode")[0]
    assert (w.inflight, w.inflight_prompt_tokens) == (1, 50)
    reg.end("a:1", 50)
    reg.set_endpoints("decode", ["c:1"])
    assert reg.endpoints("decode") == ["c:1"]
    assert reg.summary()["decode"]["known"] == 1
    with pytest.raises(ValueError, match="role"):
        reg.set_endpoints("router", [])


def test_standby_workers_serve_only_while_no_ready_one_can() -> None:
    reg = Registry()
    reg.set_endpoints("decode", ["a:1"], standby=["b:1"])
    stats(reg, "a:1")
    stats(reg, "b:1")
    assert [w.address for w in reg.available("decode")] == ["a:1"]
    assert (reg.summary()["decode"]["ready"], reg.summary()["decode"]["standby"]) == (1, 1)
    # every pod listed not ready (a node whose lease lapsed while the API server was away):
    # the workers that still answer keep serving
    reg.set_endpoints("decode", [], standby=["a:1", "b:1"])
    assert [w.address for w in reg.available("decode")] == ["a:1", "b:1"]
    assert reg.summary()["decode"]["ready"] == 0
    # ... but never one that fails its polls or drains
    reg.mark_down("a:1")
    stats(reg, "b:1", draining=True)
    assert reg.available("decode") == []
    # a ready worker that is down or excluded lets a standby one serve
    reg.set_endpoints("decode", ["a:1"], standby=["c:1"])
    stats(reg, "c:1")
    assert [w.address for w in reg.available("decode")] == ["c:1"]
    stats(reg, "a:1")
    assert [w.address for w in reg.available("decode")] == ["a:1"]
    assert [w.address for w in reg.available("decode", exclude={"a:1"})] == ["c:1"]
    # gone from discovery altogether (a terminating pod): forgotten
    reg.set_endpoints("decode", ["a:1"])
    assert reg.endpoints("decode") == ["a:1"]


def test_endpoint_addresses_split_ready_and_standby() -> None:
    s = slice_("svc", 50051, [(["10.0.0.1"], {"ready": True}),
                             (["10.0.0.2"], {"ready": False}),
                             (["10.0.0.3"], {"ready": False, "terminating": True}),
                             (["10.0.0.4"], {"ready": True, "terminating": True})])
    assert endpoint_addresses([s]) == (["10.0.0.1:50051"], ["10.0.0.2:50051"])


def slice_(service: str, port: int, eps: list[tuple[list[str], dict]]) -> dict:
    return {"metadata": {"labels": {"kubernetes.io/service-name": service}},
            "ports": [{"name": "http", "port": 8081}, {"name": "kv", "port": port}],
            "endpoints": [{"addresses": a, "conditions": c} for a, c in eps]}


def test_ready_addresses_only_ready_endpoints_of_the_kv_port() -> None:
    s = slice_("svc", 50051, [(["10.0.0.1"], {"ready": True}),
                             (["10.0.0.2"], {"ready": False}),
                             (["10.0.0.3"], {}),
                             (["10.0.0.4"], {"ready": True, "terminating": True}),
                             (["fd00::5"], {"ready": True})])
    assert ready_addresses([s]) == ["10.0.0.1:50051", "10.0.0.3:50051", "[fd00::5]:50051"]
    assert ready_addresses([{"ports": [{"name": "http", "port": 1}], "endpoints": []}]) == []


def test_ready_addresses_reads_client_objects() -> None:
    ep = SimpleNamespace(addresses=["10.1.1.1"], conditions=SimpleNamespace(ready=True,
                                                                           terminating=None))
    obj = SimpleNamespace(ports=[SimpleNamespace(name="kv", port=7)], endpoints=[ep])
    assert ready_addresses([obj]) == ["10.1.1.1:7"]


def test_parse_static() -> None:
    assert parse_static("a:1, b:2,", "--decode") == ["a:1", "b:2"]
    with pytest.raises(ValueError, match="--decode: 'a' is not host:port"):
        parse_static("a", "--decode")


def test_admission_queue_and_refusal() -> None:
    async def scenario() -> list[str]:
        adm = Admission(1, 1, queue_timeout_s=5)
        log: list[str] = []
        release = asyncio.Event()

        async def hold() -> None:
            async with adm.slot():
                log.append("first in")
                await release.wait()

        async def queued() -> None:
            async with adm.slot():
                log.append("second in")

        t1 = asyncio.create_task(hold())
        while adm.inflight == 0:
            await asyncio.sleep(0)
        t2 = asyncio.create_task(queued())
        while adm.queued == 0:
            await asyncio.sleep(0)
        with pytest.raises(ApiError) as info:
            async with adm.slot():
                pass
        assert info.value.status == 429 and info.value.retry_after_s == 1
        release.set()
        await asyncio.gather(t1, t2)
        return log

    assert asyncio.run(scenario()) == ["first in", "second in"]


def test_admission_queue_timeout() -> None:
    async def scenario() -> int:
        adm = Admission(1, 5, queue_timeout_s=0.05)
        async with adm.slot():
            with pytest.raises(ApiError) as info:
                async with adm.slot():
                    pass
        return info.value.status

    assert asyncio.run(scenario()) == 429


def test_router_config_layers(tmp_path) -> None:
    doc = tmp_path / "c.yaml"
    doc.write_text("service: s1\nnamespace: ns\nmodel: {name: llama, path: /models}\n"
                   "router: {policy: round-robin, shortPromptThreshold: 32, maxRetries: 1}\n"
                   "kvTransfer: {compression: int8, transferTimeoutMs: 5000}\n"
                   "decode: {engine: {blockSize: 32}}\n")
    cfg = from_args(["--config", str(doc), "--discovery", "endpointslices"],
                    {"SPLITSERVE_PREFILL_SERVICE": "p", "SPLITSERVE_DECODE_SERVICE": "d",
                     "POD_NAMESPACE": "pod-ns"})
    assert (cfg.model, cfg.model_name, cfg.policy, cfg.short_prompt_threshold) == \
        ("/models", "llama", "round-robin", 32)
    assert (cfg.compression, cfg.reservation_timeout_ms, cfg.block_size, cfg.namespace) == \
        ("int8", 5000, 32, "pod-ns")
    assert from_args(["--decode", "a:1", "--short-prompt-threshold", "0"],
                     {}).short_prompt_threshold == 0
    with pytest.raises(ValueError, match="--decode"):
        from_args([], {})
    with pytest.raises(ValueError, match="prefill-service"):
        from_args(["--discovery", "endpointslices"], {})
    with pytest.raises(ValueError, match="max-inflight"):
        from_args(["--decode", "a:1", "--max-inflight", "0"], {})
