"""The operator image's Dockerfile: multi-stage, and a final stage with only the interpreter,
the installed project, labels and a non-root user (the cluster tests check the built image)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def final_stage() -> str:
    text = (ROOT / "operator" / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", text, flags=re.M)
    assert len(stages) >= 3, "operator/Dockerfile must be multi-stage"
    return stages[-1]


def test_final_stage_installs_no_build_tools() -> None:
    stage = final_stage()
    installs = re.findall(r"apt-get install([^&]*)", stage)
    packages = [[t for t in i.replace("\\", " ").split() if not t.startswith("-")]
                for i in installs]
    assert packages == [["python3"]], packages
    assert "pip install" not in stage and "python3-venv" not in stage
    assert "apt-get clean" in stage and "/var/lib/apt/lists" in stage
    assert re.search(r"^COPY --from=\w+ /opt/splitserve /opt/splitserve$", stage, flags=re.M)


def test_final_stage_has_labels_and_a_non_root_user() -> None:
    stage = final_stage()
    for label in ("org.opencontainers.image.title", "org.opencontainers.image.version",
                  "org.opencontainers.image.licenses"):
        assert label in stage, label
    user = re.findall(r"^USER (\S+)$", stage, flags=re.M)
    assert user and not user[-1].startswith(("0", "root")), user


def test_build_stage_drops_the_installers() -> None:
    text = (ROOT / "operator" / "Dockerfile").read_text()
    assert "pip uninstall -y --disable-pip-version-check pip setuptools wheel" in text
    assert "--no-cache-dir" in text
