"""The one error catalogue.

Every failure a user or an agent can see is a FederationError with a stable code.
Servicers translate codes to gRPC status codes (federation.service.errors); the
client maps them back; the CLI prints `error[CODE]: message` and exits with the
code's exit status. Code is what callers branch on, never message text.
"""
from __future__ import annotations

from enum import Enum


class ErrorCode(str, Enum):
    INVALID_SPEC = "INVALID_SPEC"            # a YAML/JSON file or spec field is wrong
    UNKNOWN_DATASET = "UNKNOWN_DATASET"      # a job names a dataset no site holds
    UNSATISFIABLE = "UNSATISFIABLE"          # a request no site could ever hold
    NOT_FOUND = "NOT_FOUND"                  # job or site does not exist
    CONFLICT = "CONFLICT"                    # e.g. dataset claimed by two sites
    INVALID_TRANSITION = "INVALID_TRANSITION"
    UNAVAILABLE = "UNAVAILABLE"              # federation unreachable
    PERMISSION_DENIED = "PERMISSION_DENIED"
    CONFIG = "CONFIG"                        # a server/site config is wrong
    RAY = "RAY"                              # the site's Ray cluster misbehaved
    TIMEOUT = "TIMEOUT"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"  # a caller's or tenant's limit is reached; retry later
    INTERNAL = "INTERNAL"


# Exit statuses of fedctl, by code. 1 is reserved for "something unexpected".
EXIT_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_SPEC: 2,
    ErrorCode.UNKNOWN_DATASET: 2,
    ErrorCode.UNSATISFIABLE: 2,
    ErrorCode.CONFIG: 2,
    ErrorCode.NOT_FOUND: 3,
    ErrorCode.CONFLICT: 4,
    ErrorCode.INVALID_TRANSITION: 4,
    ErrorCode.PERMISSION_DENIED: 5,
    ErrorCode.UNAVAILABLE: 6,
    ErrorCode.TIMEOUT: 7,
    ErrorCode.RAY: 8,
    ErrorCode.RESOURCE_EXHAUSTED: 9,
    ErrorCode.INTERNAL: 1,
}


class FederationError(Exception):
    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0])

    @property
    def exit_status(self) -> int:
        return EXIT_STATUS[self.code]


class InvalidSpec(FederationError):
    code = ErrorCode.INVALID_SPEC


class UnknownDataset(FederationError):
    code = ErrorCode.UNKNOWN_DATASET


class Unsatisfiable(FederationError):
    code = ErrorCode.UNSATISFIABLE


class NotFound(FederationError):
    code = ErrorCode.NOT_FOUND


class Conflict(FederationError):
    code = ErrorCode.CONFLICT


class InvalidTransition(FederationError):
    code = ErrorCode.INVALID_TRANSITION


class Unavailable(FederationError):
    code = ErrorCode.UNAVAILABLE


class Deposed(Unavailable):
    """A replica that no longer leads tried to write: another holds the federation now."""


class PermissionDenied(FederationError):
    code = ErrorCode.PERMISSION_DENIED


class ConfigError(FederationError):
    code = ErrorCode.CONFIG


class RayError(FederationError):
    code = ErrorCode.RAY


class Timeout(FederationError):
    code = ErrorCode.TIMEOUT


class ResourceExhausted(FederationError):
    code = ErrorCode.RESOURCE_EXHAUSTED


_BY_CODE = {cls.code: cls for cls in (InvalidSpec, UnknownDataset, Unsatisfiable, NotFound, Conflict,
                                      InvalidTransition, Unavailable, PermissionDenied, ConfigError, RayError,
                                      Timeout, ResourceExhausted)}


def from_code(code: str, message: str) -> FederationError:
    """Rebuild a typed error from a code received over the wire."""
    try:
        ec = ErrorCode(code)
    except ValueError:
        return FederationError(message)
    cls = _BY_CODE.get(ec, FederationError)
    return cls(message, code=ec)
