"""Who is calling, and what they may do.

A caller is the client certificate the federation's CA issued it: the common name is the
user or site, and organizational units carry its role and scope (`role:submitter`,
`tenant:oncology`, `site:eu-west`), so they cannot be changed without the CA's key.

| role | may |
| --- | --- |
| federation-admin | everything |
| tenant-admin | submit, see, cancel, read logs of its tenants' jobs; see queues and usage of its tenants |
| submitter | the same for its tenants' jobs |
| site-operator | cordon, uncordon, drain its sites; list sites |
| site | the site service for the site it names, nothing else |
| monitor | read the federation's and sites' metrics (what Prometheus scrapes with), nothing else |
| anonymous (plain text) | submit, see, cancel, read logs of every tenant's jobs; the site service for any site |

Plain text is served only when a config asks for `insecure: true` alone, never beside `tls`
(the server logs a warning at start). It proves nothing about a caller, so without a
certificate there is no admin: revoking, join tokens, draining the federation and changing a
site's state need one.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import cast

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

from federation.errors import PermissionDenied

BOUND = ("jurisdiction", "region", "label")
ROLES = ("federation-admin", "tenant-admin", "submitter", "site-operator", "site", "monitor")
TENANT_ROLES = ("tenant-admin", "submitter")
# Our CA dates every certificate's start this long before its issue, for machines whose clocks lag;
# the issue time is read back from it (federation.pki issues, Trust refuses by name and issue time).
BACKDATE_S = 300


@dataclass(frozen=True)
class Identity:
    name: str
    role: str = ""
    tenants: frozenset[str] = frozenset()
    sites: frozenset[str] = frozenset()
    serial: str = ""             # of its certificate, for revocation
    bound: tuple[str, ...] = ()  # a site's attributes its enrolment fixed: jurisdiction:DE, region:.., label:k=v
    issued_at: float = 0.0       # when its certificate was issued, to the second; for revocation by name

    @property
    def admin(self) -> bool:
        return self.role == "federation-admin"

    @property
    def every_tenant(self) -> bool:
        """Sees every tenant's work, not only its own tenants'."""
        return self.admin

    def sees_tenant(self, tenant: str) -> bool:
        return self.every_tenant or (self.role in TENANT_ROLES and tenant in self.tenants)

    def check_tenant(self, tenant: str, what: str) -> None:
        if not self.sees_tenant(tenant):
            raise PermissionDenied(f"{self.name} ({self.role or 'no role'}) may not {what} of tenant {tenant!r}")

    def check_site(self, site: str, what: str) -> None:
        if not (self.admin or (self.role == "site-operator" and site in self.sites)):
            raise PermissionDenied(f"{self.name} ({self.role or 'no role'}) may not {what} site {site!r}")

    def reads_metrics(self, site: str = "") -> bool:
        """May scrape the federation's metrics, or (with `site`) that site's agent's."""
        return self.role in ("federation-admin", "monitor") or (
            bool(site) and self.role == "site-operator" and site in self.sites)

    def check_user(self) -> None:
        """Site agents' certificates are for the site service only; a monitor's for metrics."""
        if self.role not in ROLES or self.role in ("site", "monitor"):
            raise PermissionDenied(f"{self.name} ({self.role or 'no role'}) may not use the federation service")


@dataclass(frozen=True)
class _Anonymous(Identity):
    @property
    def every_tenant(self) -> bool:
        return True


# Site agents over plain text still work: federation.service.sites lets ANONYMOUS speak for any site.
ANONYMOUS: Identity = _Anonymous("anonymous", "submitter")


def scopes(role: str, tenants: tuple[str, ...] = (), sites: tuple[str, ...] = ()) -> list[str]:
    """The organizational units a certificate carries for a role and its scope."""
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
    return [f"role:{role}", *(f"tenant:{t}" for t in tenants), *(f"site:{s}" for s in sites)]


def binding(jurisdiction: str, region: str, labels: dict[str, str]) -> list[str]:
    """The units that fix an enrolled site's attributes."""
    return [f"jurisdiction:{jurisdiction}", f"region:{region}", *(f"label:{k}={v}" for k, v in sorted(labels.items()))]


def check_claim(who: Identity, jurisdiction: str, region: str, labels: dict[str, str]) -> None:
    """A site whose enrolment fixed its attributes must claim exactly those."""
    claimed = sorted(binding(jurisdiction, region, labels))
    if who.bound and sorted(who.bound) != claimed:
        raise PermissionDenied(f"site {who.name} was enrolled as {', '.join(sorted(who.bound))}; it claims "
                               f"{', '.join(claimed)}")


@functools.lru_cache(maxsize=4096)
def of_certificate(pem: bytes) -> Identity:
    """The identity a verified client certificate carries. Remembered by its bytes: every call a
    caller makes presents the same certificate, and reading one is most of the cost of checking it."""
    cert = x509.load_pem_x509_certificate(pem)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    units = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)]
    roles = [u.split(":", 1)[1] for u in units if u.startswith("role:")]
    return Identity(str(names[0].value) if names else "",
                    roles[0] if len(roles) == 1 else "",
                    frozenset(u.split(":", 1)[1] for u in units if u.startswith("tenant:")),
                    frozenset(u.split(":", 1)[1] for u in units if u.startswith("site:")),
                    format(cert.serial_number, "x"),
                    tuple(u for u in units if u.split(":", 1)[0] in BOUND),
                    cert.not_valid_before_utc.timestamp() + BACKDATE_S)


def auth_properties(context: grpc.ServicerContext | grpc.aio.ServicerContext) -> dict[str, list[bytes]]:
    """The call's authentication properties; grpc's stubs type them as bytes, grpc gives lists of bytes."""
    return cast(dict[str, list[bytes]], context.auth_context() or {})


def of_context(context: grpc.ServicerContext | grpc.aio.ServicerContext) -> Identity:
    """The caller of a gRPC call: its verified client certificate; on TLS without one, nobody;
    on plain text (development only), the anonymous submitter, never an admin."""
    auth = auth_properties(context)
    pem = auth.get("x509_pem_cert")
    if pem:
        return of_certificate(pem[0])
    if b"ssl" in auth.get("transport_security_type", []):
        return Identity("unauthenticated")
    return ANONYMOUS
