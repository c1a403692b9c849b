"""The router's API-key check: header parsing, the key file, its reload and its errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from splitserve.router import config as router_config
from splitserve.router.auth import ApiKeys, bearer_token, key_matches, parse_keys


def test_parse_keys_skips_blanks_and_comments() -> None:
    text = "# rotated monthly\n sk-one \n\nsk-two\r\n#sk-disabled\n"
    assert parse_keys(text) == {b"sk-one", b"sk-two"}


@pytest.mark.parametrize(("header", "token"), [
    ("Bearer sk-1", b"sk-1"), ("bearer  sk-1 ", b"sk-1"), ("BEARER sk-1", b"sk-1"),
    (None, None), ("", None), ("Bearer", None), ("Bearer ", None), ("Basic c2stMQ==", None),
    ("sk-1", None),
])
def test_bearer_token(header: str | None, token: bytes | None) -> None:
    assert bearer_token(header) == token


def test_key_matches_only_whole_accepted_keys() -> None:
    keys = frozenset({b"sk-one", b"sk-two"})
    assert key_matches(b"sk-two", keys)
    assert not key_matches(b"sk-tw", keys) and not key_matches(b"sk-two2", keys)
    assert not key_matches(None, keys) and not key_matches(b"sk-one", frozenset())


def test_missing_or_empty_file_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"--api-keys-file=.*cannot read it"):
        ApiKeys(tmp_path / "absent")
    empty = tmp_path / "empty"
    empty.write_text("# nothing yet\n\n")
    with pytest.raises(ValueError, match=r"--api-keys-file=.*holds no keys"):
        ApiKeys(empty)


def test_reload_on_change_and_keep_keys_when_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "keys"
    path.write_text("sk-old\n")
    keys = ApiKeys(path)
    assert keys.check("Bearer sk-old") is None
    aside = tmp_path / "keys.new"
    aside.write_text("sk-new\n")
    os.replace(aside, path)
    assert keys.check("Bearer sk-new") is None
    refused = keys.check("Bearer sk-old")
    assert refused is not None and refused.status == 401 and refused.code == "invalid_api_key"
    path.unlink()
    assert keys.check("Bearer sk-new") is None  # a vanished file keeps the keys loaded last
    missing = keys.check(None)
    assert missing is not None and missing.message.startswith("missing API key")


def test_router_flag_and_environment(tmp_path: Path) -> None:
    base = ["--decode", "127.0.0.1:1"]
    flag = router_config.from_args([*base, "--api-keys-file", "/k/flag"], {})
    assert flag.api_keys_file == "/k/flag"
    env = router_config.from_args(base, {"SPLITSERVE_API_KEYS_FILE": "/k/env"})
    assert env.api_keys_file == "/k/env"
    assert router_config.from_args(base, {}).api_keys_file == ""
