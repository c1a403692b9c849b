from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from splitserve.engine.llm_engine import LLMEngine
from splitserve.engine.tiny_model import SIZES, write_model
from splitserve.worker.process import WorkerProcess


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(tmp_path_factory.mktemp("tiny"), SIZES["tiny"])


@pytest.fixture(scope="session")
def reference(tiny_model: Path) -> LLMEngine:
    """A colocated engine in this process: the answer every other path must reproduce."""
    return LLMEngine.from_path(tiny_model)


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("worker-logs")


@pytest.fixture(scope="module")
def pair(tiny_model: Path, log_dir: Path) -> Iterator[tuple[WorkerProcess, WorkerProcess]]:
    """A prefill and a decode worker; the prefill side runs prompts in chunks of 64 tokens."""
    prefill = WorkerProcess("prefill", tiny_model, "--max-batched-tokens", "64",
                            log_dir=log_dir)
    decode = WorkerProcess("decode", tiny_model, log_dir=log_dir)
    yield prefill, decode
    prefill.stop()
    decode.stop()
