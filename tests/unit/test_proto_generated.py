"""The committed gRPC code equals what grpcio-tools generates from the committed protos."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_matches_protos(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHON=sys.executable)
    subprocess.run([str(ROOT / "scripts" / "gen-proto"), str(tmp_path)], env=env, check=True)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2*"))
    assert generated, "grpcio-tools generated nothing"
    for rel in generated:
        committed = ROOT / "worker" / rel
        assert committed.exists(), f"{rel} is generated but not committed (run scripts/gen-proto)"
        assert committed.read_text() == (tmp_path / rel).read_text(), (
            f"{rel} differs from a fresh generation (run scripts/gen-proto)")
