"""TLS and mutual TLS for worker gRPC (KV pushes and control) from a certificate Secret's files.

The Secret layout is cert-manager's: `tls.crt`, `tls.key` and `ca.crt` in one directory. With
`ca.crt` present, servers require and verify client certificates (mTLS) and clients verify the
server against that CA; every worker presents the same certificate in both directions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import grpc

ChannelOptions = list[tuple[str, int | str]]


@dataclass(frozen=True)
class TLSFiles:
    cert: bytes
    key: bytes
    ca: bytes | None
    server_name: str  # name the peers' certificate is issued for (SAN); addresses are pod IPs

    @staticmethod
    def from_dir(path: str | Path, server_name: str) -> TLSFiles:
        root = Path(path)
        missing = [n for n in ("tls.crt", "tls.key") if not (root / n).is_file()]
        if missing:
            raise ValueError(f"TLS directory {root}: missing {', '.join(missing)} "
                             "(expected tls.crt, tls.key and optionally ca.crt)")
        ca = root / "ca.crt"
        return TLSFiles((root / "tls.crt").read_bytes(), (root / "tls.key").read_bytes(),
                        ca.read_bytes() if ca.is_file() else None, server_name)


def server_credentials(tls: TLSFiles) -> grpc.ServerCredentials:
    return grpc.ssl_server_credentials([(tls.key, tls.cert)], root_certificates=tls.ca,
                                       require_client_auth=tls.ca is not None)


def open_channel(address: str, tls: TLSFiles | None, options: ChannelOptions) -> grpc.Channel:
    if tls is None:
        return grpc.insecure_channel(address, options=options)
    creds = grpc.ssl_channel_credentials(root_certificates=tls.ca, private_key=tls.key,
                                         certificate_chain=tls.cert)
    return grpc.secure_channel(address, creds,
                               options=[*options, ("grpc.ssl_target_name_override",
                                                   tls.server_name)])
