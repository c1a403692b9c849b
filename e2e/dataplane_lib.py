"""The real data plane in the test cluster: its image (built from worker/Dockerfile, keyed by a
hash of everything the build reads, so an unchanged tree builds nothing), the tiny model on
the node, a colocated reference engine, and small readers of worker metrics.

The cluster's only node is this machine, so the tiny model reaches the pods as a hostPath of a
directory written here by the project's own checkpoint maker.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))) / "splitserve"
DOCKERFILE = ROOT / "worker" / "Dockerfile"
IMAGE_REPOSITORY = "docker.io/splitserve/dataplane"
# What the Dockerfile copies from the build context (besides the Dockerfile itself).
IMAGE_INPUTS = ("worker/Dockerfile", "pyproject.toml", "README.md", "setup.py", "operator",
                "worker")
_SKIPPED_PARTS = ("__pycache__", ".egg-info", ".mypy_cache", ".pytest_cache", ".ruff_cache")
# Engine limits shared by the served pools and the reference engine, so that both compute
# with the same shapes.
ENGINE = {"maxBatchTokens": 512, "maxRunningSeqs": 32, "blockSize": 16, "kvCacheBlocks": 256}
MAX_CONTEXT = 1024


def _image_files(root: Path) -> Iterator[Path]:
    for item in IMAGE_INPUTS:
        path = root / item
        if path.is_file():
            yield path
            continue
        for found in sorted(path.rglob("*")):
            rel = found.relative_to(root).as_posix()
            if found.is_file() and not found.name.endswith(".pyc") and \
                    not any(part in rel for part in _SKIPPED_PARTS):
                yield found


def image_digest(root: Path = ROOT) -> str:
    """Hash of the files the image build reads (names and contents)."""
    digest = hashlib.sha256()
    for path in _image_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def image_name(root: Path = ROOT) -> str:
    return f"{IMAGE_REPOSITORY}:src-{image_digest(root)}"


def containerd_address() -> str:
    state = os.environ.get("SS_STATE", "/var/lib/splitserve-cluster")
    return os.environ.get("SS_CONTAINERD_SOCK", f"{state}/containerd/containerd.sock")


def node_has_image(name: str) -> bool:
    out = subprocess.run(["ctr", "--address", containerd_address(), "-n", "k8s.io", "images",
                          "ls", "-q", f"name=={name}"], capture_output=True, text=True,
                         timeout=60, check=False)
    return out.returncode == 0 and name in out.stdout.split()


@dataclass(frozen=True)
class DataplaneImage:
    name: str
    built: bool  # False: it was already on the node
    seconds: float  # build and load time (0 when nothing was built)


def ensure_image(cluster: Any) -> DataplaneImage:
    """The data-plane image of this source tree on the cluster's node, built when missing.

    With preloaded images (kind), SPLITSERVE_E2E_DATAPLANE_IMAGE names the image instead."""
    if cluster.images_preloaded:
        return DataplaneImage(os.environ.get("SPLITSERVE_E2E_DATAPLANE_IMAGE",
                                             f"{IMAGE_REPOSITORY}:dev"), False, 0.0)
    name = image_name()
    if node_has_image(name):
        return DataplaneImage(name, False, 0.0)
    started = time.monotonic()
    built = cluster.build_image(DOCKERFILE, ROOT, name)
    if not node_has_image(built):
        raise AssertionError(f"{built} is not in the node's containerd after the build")
    return DataplaneImage(built, True, time.monotonic() - started)


def image_size(name: str) -> int:
    """Unpacked size in bytes of the image as the node's containerd holds it."""
    out = subprocess.run(["ctr", "--address", containerd_address(), "-n", "k8s.io", "images",
                          "ls", f"name=={name}"], capture_output=True, text=True, timeout=60,
                         check=True)
    lines = [line.split() for line in out.stdout.splitlines()[1:] if line.strip()]
    if not lines:
        raise AssertionError(f"{name} is not in the node's containerd")
    # columns: REF TYPE DIGEST SIZE UNIT PLATFORMS LABELS (size is the compressed content)
    size, unit = float(lines[0][3]), lines[0][4]
    scale = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}[unit]
    return int(size * scale)


def tiny_model_dir(revision: int = 0) -> Path:
    """The built-in tiny checkpoint (or a later `revision` of it: same tokenizer, other
    weights) in a directory the pods read through a hostPath (the node is this machine);
    readable by the pods' non-root user."""
    from dataclasses import replace

    from splitserve.engine.tiny_model import SIZES, ensure_model

    name = "tiny-llama-s0" + (f"-r{revision}" if revision else "")
    path = ensure_model(CACHE / "e2e" / "models" / name, replace(SIZES["tiny"],
                                                                   revision=revision))
    path.chmod(0o755)
    for item in path.iterdir():
        item.chmod(item.stat().st_mode | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    return path


def reference_engine(model_dir: Path) -> Any:
    """A colocated engine in this process with the served pools' limits: the answers the
    disaggregated path must equal."""
    from splitserve.engine.config import EngineConfig
    from splitserve.engine.llm_engine import LLMEngine

    return LLMEngine.from_path(model_dir, EngineConfig(
        dtype="float32", device="cpu", block_size=ENGINE["blockSize"],
        num_blocks=ENGINE["kvCacheBlocks"], max_num_seqs=ENGINE["maxRunningSeqs"],
        max_num_batched_tokens=ENGINE["maxBatchTokens"], max_model_len=MAX_CONTEXT))


def reference_answer(engine: Any, prompt: str | list[int], max_tokens: int) -> tuple[str, int]:
    """Greedy text and token count of the colocated engine."""
    from splitserve.engine.sampling_params import SamplingParams

    out = engine.generate([prompt], SamplingParams(max_tokens=max_tokens, ignore_eos=True))[0]
    return out.text, len(out.token_ids)


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


def metric_sum(text: str, series: str, **labels: str) -> float:
    """Sum of the samples of `series` whose labels include `labels` (Prometheus text)."""
    from splitserve.local.metrics_text import counter_sum

    return float(counter_sum(text, series, **labels))
