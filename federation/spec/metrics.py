"""`spec.metrics` of a federation or a site: where Prometheus scrapes it, and how it proves who scrapes."""
from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, model_validator

from federation.spec.common import Strict


class MetricsTLS(Strict):
    cert: Path
    key: Path
    client_ca: Path = Field(description="scrapers present a certificate from this CA (role monitor or "
                                        "federation-admin; at a site, its site-operator too)")


class MetricsSettings(Strict):
    listen: str = Field(pattern=r"^\[?[A-Za-z0-9.:-]+\]?:\d{1,5}$",
                        description="host:port of /metrics; port 0 picks one")
    tls: MetricsTLS | None = Field(default=None,
                                   description="at the federation: its spec.tls when that has a client_ca")
    insecure: bool = Field(default=False, description="plain HTTP on an address other than loopback; anyone who "
                                                      "reaches it reads every metric")

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @model_validator(mode="after")
    def _plain_only_on_loopback(self) -> MetricsSettings:
        if self.tls is not None and self.insecure:
            raise ValueError("plain HTTP is never used beside tls: remove insecure")
        return self

    def plain_allowed(self) -> bool:
        """Plain HTTP where only this host can reach it, or where the config says so."""
        if self.insecure:
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"
