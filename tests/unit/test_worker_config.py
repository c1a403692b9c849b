"""Worker settings: flag, else environment, else the config document, else the default."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from splitserve.worker.config import from_args

DOC = {
    "service": "llama", "namespace": "doc-ns",
    "model": {"name": "llama-3", "path": "/models", "dtype": "bfloat16", "maxContext": 256},
    "prefill": {"engine": {"blockSize": 32, "maxBatchTokens": 2048, "maxRunningSeqs": 4,
                           "kvCacheBlocks": 100}},
    "decode": {"engine": {"blockSize": 16, "maxBatchTokens": 128, "maxRunningSeqs": 32}},
    "kvTransfer": {"port": 6000, "transferTimeoutMs": 5000, "maxMessageBytes": 1 << 24},
}


@pytest.fixture
def doc(tmp_path: Path) -> str:
    path = tmp_path / "splitserve.yaml"
    path.write_text(yaml.safe_dump(DOC))
    return str(path)


def test_defaults_without_document_or_environment() -> None:
    cfg = from_args([], {})
    assert (cfg.role, cfg.model, cfg.host, cfg.grpc_port, cfg.http_port) == \
        ("colocated", "tiny", "127.0.0.1", 50051, 8081)
    assert cfg.engine.num_blocks == 512 and cfg.engine.dtype == "float32"
    assert cfg.engine.max_model_len is None and cfg.tls_dir == ""
    assert cfg.namespace == "default" and cfg.service == "local" and cfg.pool == "colocated"


def test_document_supplies_the_roles_limits(doc: str) -> None:
    cfg = from_args(["--config", doc, "--role", "prefill"], {})
    assert cfg.model == "/models" and cfg.model_name == "llama-3"
    assert (cfg.engine.block_size, cfg.engine.max_num_batched_tokens, cfg.engine.max_num_seqs,
            cfg.engine.num_blocks) == (32, 2048, 4, 100)
    assert cfg.engine.dtype == "bfloat16" and cfg.engine.max_model_len == 256
    assert cfg.grpc_port == 6000 and cfg.reservation_timeout_s == 5.0
    assert cfg.max_message_bytes == 1 << 24
    assert (cfg.namespace, cfg.service) == ("doc-ns", "llama")
    decode = from_args(["--config", doc, "--role", "decode"], {})
    assert (decode.engine.max_num_batched_tokens, decode.engine.num_blocks) == (128, 512)
    colocated = from_args(["--config", doc], {})
    assert colocated.engine.max_num_seqs == 32  # a colocated worker takes the decode limits


def test_environment_beats_document_and_flags_beat_both(doc: str) -> None:
    env = {"SPLITSERVE_CONFIG": doc, "SPLITSERVE_ROLE": "decode", "POD_NAMESPACE": "pod-ns",
           "SPLITSERVE_MAX_NUM_SEQS": "7", "SPLITSERVE_GRPC_PORT": "7000"}
    cfg = from_args([], env)
    assert cfg.role == "decode" and cfg.namespace == "pod-ns"
    assert cfg.engine.max_num_seqs == 7 and cfg.grpc_port == 7000
    cfg = from_args(["--max-num-seqs", "3", "--grpc-port", "0", "--namespace", "flag-ns",
                     "--model", "small"], env)
    assert cfg.engine.max_num_seqs == 3 and cfg.grpc_port == 0
    assert cfg.namespace == "flag-ns" and cfg.model == "small" and cfg.model_name == "llama-3"


@pytest.mark.parametrize(("argv", "env", "message"), [
    (["--grpc-port", "70000"], {}, "--grpc-port=70000"),
    ([], {"SPLITSERVE_ROLE": "router"}, "SPLITSERVE_ROLE='router'"),
    ([], {"SPLITSERVE_NUM_BLOCKS": "many"}, "num-blocks='many'"),
    (["--config", "/nonexistent/splitserve.yaml"], {}, "--config /nonexistent"),
])
def test_bad_settings_name_the_setting(argv: list[str], env: dict[str, str],
                                       message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        from_args(argv, env)


def test_document_that_is_not_a_mapping_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("- a list\n")
    with pytest.raises(ValueError, match="expected a mapping"):
        from_args(["--config", str(path)], {})
