"""Fixtures shared by the local-stack tests: a colocated reference engine."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def reference():
    """A colocated engine in this process: the answers the disaggregated path must equal."""
    from splitserve.engine.config import EngineConfig
    from splitserve.engine.llm_engine import LLMEngine
    from splitserve.worker.config import builtin_model

    return LLMEngine.from_path(builtin_model("tiny"),
                               EngineConfig(dtype="float32", device="cpu", num_blocks=256,
                                            max_model_len=1024))
