"""Tiny checkpoints made once per test session (deterministic, nothing downloaded)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import astuple
from pathlib import Path

import pytest
import torch

from splitserve.engine.tiny_model import TinySpec, write_model


@pytest.fixture(scope="session")
def make_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Callable[[TinySpec], Path]:
    made: dict[tuple[object, ...], Path] = {}

    def make(spec: TinySpec) -> Path:
        key = astuple(spec)
        if key not in made:
            made[key] = write_model(tmp_path_factory.mktemp("model"), spec)
        return made[key]

    return make


@pytest.fixture(scope="session")
def tiny_checkpoint(make_checkpoint: Callable[[TinySpec], Path]) -> Path:
    return make_checkpoint(TinySpec())


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads, and on a busy machine spinning threads stall."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
