"""The user docs keep up with the code: every condition reason is explained, every doc is linked
from the README, and the paths the install docs name exist."""

from __future__ import annotations

import re
from pathlib import Path

from splitserve.api.names import Reason

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def test_troubleshooting_explains_every_condition_reason() -> None:
    text = (DOCS / "troubleshooting.md").read_text()
    headings = set(re.findall(r"^### (\w+)$", text, flags=re.M))
    tabled = set(re.findall(r"^\| [^|]+ \| `(\w+)` \|", text, flags=re.M))
    missing = [r.value for r in Reason if r.value not in headings | tabled]
    assert not missing, f"docs/troubleshooting.md does not explain: {missing}"


def test_readme_links_the_user_docs() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in ("install.md", "quickstart.md", "reference.md", "troubleshooting.md"):
        assert (DOCS / name).exists() and f"(docs/{name})" in readme, name


def test_paths_named_by_the_install_docs_exist() -> None:
    for name in ("install.md", "quickstart.md"):
        text = (DOCS / name).read_text()
        for path in set(re.findall(r"\b((?:manifests|charts)/[\w./-]*\w)", text)):
            assert (ROOT / path).exists(), f"{name} names {path}, which does not exist"
