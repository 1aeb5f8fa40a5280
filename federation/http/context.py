"""A gRPC servicer context for a call that came over HTTPS, so the servicer checks the caller and
translates errors exactly as it does for gRPC: the same code serves both."""
from __future__ import annotations

import ssl
from collections.abc import Sequence

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

from federation.errors import ErrorCode
from federation.service.errors import CODE_KEY

HTTP_STATUS = {
    ErrorCode.INVALID_SPEC: 400, ErrorCode.UNKNOWN_DATASET: 400, ErrorCode.CONFIG: 400,
    ErrorCode.UNSATISFIABLE: 422, ErrorCode.NOT_FOUND: 404, ErrorCode.CONFLICT: 409,
    ErrorCode.INVALID_TRANSITION: 409, ErrorCode.PERMISSION_DENIED: 403, ErrorCode.UNAVAILABLE: 503,
    ErrorCode.TIMEOUT: 504, ErrorCode.RESOURCE_EXHAUSTED: 429, ErrorCode.RAY: 500, ErrorCode.INTERNAL: 500,
}


class Aborted(Exception):
    """What `context.abort` raises: the status, its details, and our error code when one was set."""

    def __init__(self, status: grpc.StatusCode, details: str, code: ErrorCode | None) -> None:
        super().__init__(details)
        self.status, self.details, self.code = status, details, code


class HttpContext:
    """The caller's verified client certificate, as gRPC's auth context would carry it."""

    def __init__(self, der: bytes | None) -> None:
        self._auth: dict[str, list[bytes]] = {"transport_security_type": [b"ssl"]}
        if der:
            pem = ssl.DER_cert_to_PEM_cert(der).encode()
            names = x509.load_pem_x509_certificate(pem).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            self._auth["x509_pem_cert"] = [pem]
            self._auth["x509_common_name"] = [str(n.value).encode() for n in names]
        self._code: ErrorCode | None = None

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, str]]) -> None:
        for key, value in metadata:
            if key == CODE_KEY:
                self._code = ErrorCode(value)

    def abort(self, status: grpc.StatusCode, details: str) -> None:
        raise Aborted(status, details, self._code)
