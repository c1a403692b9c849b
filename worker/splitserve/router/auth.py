"""API keys on the router: every path but the probes' and scrapers' (`OPEN_PATHS`) needs
`Authorization: Bearer <key>` with a key from a file.

The file lists one key per line (blank lines and `#` comments ignored). It is re-read when it
changes, so a Secret mounted as a directory rotates keys without a restart; a file that cannot
be read keeps the keys loaded last, and a file with no keys accepts none.
"""

from __future__ import annotations

import hmac
import logging
import os
from pathlib import Path

from splitserve.router.errors import ApiError

log = logging.getLogger(__name__)

# kubelet probes, the preStop drain and Prometheus carry no credentials
OPEN_PATHS = frozenset({"/health", "/healthz", "/readyz", "/drain", "/status", "/metrics",
                        "/openapi.json"})


def parse_keys(text: str) -> frozenset[bytes]:
    keys = (line.strip() for line in text.splitlines())
    return frozenset(k.encode() for k in keys if k and not k.startswith("#"))


def bearer_token(header: str | None) -> bytes | None:
    """The credential of an `Authorization: Bearer <token>` header, else None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token.encode()


def key_matches(token: bytes | None, keys: frozenset[bytes]) -> bool:
    """Constant-time comparison against every accepted key."""
    if token is None:
        return False
    found = False
    for key in keys:
        found |= hmac.compare_digest(token, key)
    return found


def unauthorized(token: bytes | None) -> ApiError:
    message = ("missing API key: send it as `Authorization: Bearer <key>`" if token is None
               else "invalid API key")
    return ApiError(401, message, code="invalid_api_key")


class ApiKeys:
    """The accepted keys of one file, refreshed when the file's identity or size changes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None
        self._keys: frozenset[bytes] = frozenset()
        try:
            self._load()
        except OSError as exc:
            raise ValueError(f"--api-keys-file={self.path}: cannot read it "
                             f"({exc.strerror or exc})") from None
        if not self._keys:
            raise ValueError(f"--api-keys-file={self.path}: holds no keys; expected one API "
                             "key per line")

    def _load(self) -> None:
        st = os.stat(self.path)  # follows the symlinks a mounted Secret swaps on update
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        keys = parse_keys(self.path.read_text(encoding="utf-8", errors="replace"))
        if self._stamp is not None:
            log.info("API keys reloaded from %s: %d keys", self.path, len(keys))
        self._keys, self._stamp = keys, stamp

    def refresh(self) -> None:
        try:
            self._load()
        except OSError as exc:
            log.warning("API keys: cannot re-read %s (%s); keeping the %d keys loaded before",
                        self.path, exc, len(self._keys))

    def check(self, header: str | None) -> ApiError | None:
        """None when the header carries an accepted key, else the 401 to answer with."""
        self.refresh()
        token = bearer_token(header)
        return None if key_matches(token, self._keys) else unauthorized(token)
