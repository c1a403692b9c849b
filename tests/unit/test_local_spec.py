"""The local runner's reading of a SplitService spec, its view, and metric text parsing."""

from __future__ import annotations

import pytest

from splitserve.local.metrics_text import counter_sum
from splitserve.local.spec import model_dir, parse_spec, router_args, worker_args
from splitserve.local.view import log_line, render

SPEC = {"apiVersion": "splitserve.io/v1alpha1", "kind": "SplitService",
        "metadata": {"name": "chat", "namespace": "team"},
        "spec": {"model": {"name": "small", "dtype": "float32", "maxContext": 2048},
                 "prefill": {"replicas": 2, "engine": {"maxBatchTokens": 1024,
                                                       "kvCacheBlocks": 128}},
                 "router": {"shortPromptThreshold": 20, "policy": "round-robin"},
                 "kvTransfer": {"compression": "int8"}}}


def test_spec_without_source_uses_the_builtin_model_it_names() -> None:
    plan = parse_spec(SPEC)
    assert (plan.builtin, plan.name, plan.namespace) == ("small", "chat", "team")
    assert model_dir(plan) == "small"
    assert parse_spec({"model": {"name": "gpt"}}).builtin == "tiny"  # bare spec


def test_command_lines_follow_the_spec() -> None:
    plan = parse_spec(SPEC)
    w = worker_args(plan, "prefill", "/m")
    assert w[:3] == ["worker", "--role", "prefill"]
    pairs = dict(zip(w[3::2], w[4::2], strict=False))
    assert pairs["--max-batched-tokens"] == "1024" and pairs["--num-blocks"] == "128"
    assert pairs["--max-model-len"] == "2048" and pairs["--dtype"] == "float32"
    r = router_args(plan, "/m", ["p:1", "p:2"], ["d:1"], 0)
    rp = dict(zip(r[1::2], r[2::2], strict=False))
    assert rp["--prefill"] == "p:1,p:2" and rp["--short-prompt-threshold"] == "20"
    assert rp["--policy"] == "round-robin" and rp["--compression"] == "int8"


def test_bad_specs_name_the_field(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"spec\.prefill\.replicas"):
        parse_spec({"model": {"name": "tiny"}, "prefill": {"replicas": 0}})
    with pytest.raises(ValueError, match="expected a SplitService mapping"):
        parse_spec([1])
    pvc = parse_spec({"model": {"name": "x", "source": {"pvc": {"claimName": "w"}}}})
    with pytest.raises(ValueError, match=r"source\.pvc"):
        model_dir(pvc)
    host = parse_spec({"model": {"name": "x", "source": {"hostPath": str(tmp_path)}}})
    with pytest.raises(ValueError, match=r"no config\.json"):
        model_dir(host)


def test_view_lines() -> None:
    pool = {"known": 1, "ready": 1, "running": 2, "waiting": 0, "queued_prompt_tokens": 5,
            "kv_blocks_used": 3, "kv_blocks_total": 10}
    status = {"pools": {"prefill": pool, "decode": pool}, "inflight": 2, "queued": 0,
              "ttft_ms": {"p50": 12.0, "p90": None}, "tpot_ms": {"p50": 3.21, "p90": 4.0}}
    text = "\n".join(render(status, "http://x", "svc", {"prefill": (1, 1)}))
    assert "3/10" in text and "TTFT p50 12ms p90 -" in text and "TPOT p50 3.2ms" in text
    assert "inflight=2" in log_line(status)


def test_counter_sum() -> None:
    text = ('# HELP x_total t\nx_total{role="prefill",direction="sent"} 10.0\n'
            'x_total{role="decode",direction="received"} 4.0\nx_totally 1\n')
    assert counter_sum(text, "x_total") == 14.0
    assert counter_sum(text, "x_total", direction="sent") == 10.0
