"""gRPC channels and server ports, with TLS as a setting, and batches cut to fit a call.

Mutual TLS when certificates are given; plain text only when asked for
explicitly, and then with a loud warning.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import grpc
from google.protobuf.message import Message

from federation.errors import ConfigError

log = logging.getLogger("federation.transport")

MAX_MESSAGE_BYTES = 8 << 20
OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
SERVER_OPTIONS = OPTIONS + [
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.so_reuseport", 0),  # a second federation on the same port must fail, not share it
]
INSECURE_WARNING = ("PLAIN-TEXT gRPC (insecure: true): anyone on the network can read and forge traffic; "
                    "development only")


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{what}: cannot read {path}: {e.strerror}") from None


def _read_optional(path: Path | None, what: str) -> bytes | None:
    return None if path is None else _read(path, what)


def add_port(server: grpc.Server | grpc.aio.Server, address: str, *, cert: Path | None, key: Path | None,
             client_ca: Path | None, insecure: bool) -> int:
    try:
        if insecure:
            log.warning(INSECURE_WARNING)
            port = server.add_insecure_port(address)
        else:
            if cert is None or key is None:
                raise ConfigError("tls: cert and key are required unless insecure: true")
            ca = _read_optional(client_ca, "tls.client_ca")
            creds = grpc.ssl_server_credentials([(_read(key, "tls.key"), _read(cert, "tls.cert"))],
                                                root_certificates=ca, require_client_auth=ca is not None)
            port = server.add_secure_port(address, creds)
    except RuntimeError:
        port = 0
    if port == 0:
        raise ConfigError(f"listen: cannot bind {address} (in use, or not an address of this host)")
    return port


def open_channel(address: str, *, ca: Path | None = None, cert: Path | None = None, key: Path | None = None,
                 insecure: bool = False) -> grpc.Channel:
    if insecure:
        log.warning(INSECURE_WARNING)
        return grpc.insecure_channel(address, options=OPTIONS)
    if ca is None:
        raise ConfigError("tls: a CA certificate is required unless insecure is set")
    creds = grpc.ssl_channel_credentials(root_certificates=_read(ca, "tls.ca"),
                                         private_key=_read_optional(key, "tls.key"),
                                         certificate_chain=_read_optional(cert, "tls.cert"))
    return grpc.secure_channel(address, creds, options=OPTIONS)


def chunked(items: list[Message], count: int = 500, size: int = 4 << 20) -> Iterator[list]:
    """`items` in calls of at most `count` and about `size` bytes, well within a call's limit (a
    spec is at most 64 KiB)."""
    chunk: list[Message] = []
    total = 0
    for item in items:
        if chunk and (len(chunk) == count or total + item.ByteSize() > size):
            yield chunk
            chunk, total = [], 0
        chunk.append(item)
        total += item.ByteSize()
    if chunk:
        yield chunk
