"""Reading a /metrics endpoint the way Prometheus does: over HTTPS with a client certificate."""
from __future__ import annotations

import ssl
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from federation.identity import scopes
from federation.pki import issue

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int, ca: Path | None, cert: Path | None = None, key: Path | None = None) -> Samples:
    """Every sample by (name, labels). Raises urllib's HTTPError on a refusal, URLError on a failed handshake."""
    scheme = "https" if ca is not None else "http"
    context = None
    if ca is not None:
        context = ssl.create_default_context(cafile=str(ca))
        if cert is not None:
            context.load_cert_chain(str(cert), str(key))
    with urllib.request.urlopen(f"{scheme}://127.0.0.1:{port}/metrics", context=context, timeout=10) as r:
        text = r.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def scraped(fed, name: str = "federation") -> Samples:
    """A LocalFederation's server ("federation") or a site's agent, scraped as a monitor."""
    if "monitor" not in fed.pki:
        fed.pki["monitor"] = issue(fed.pki["ca"], fed.work / "pki", "monitor", units=tuple(scopes("monitor")))
    monitor = fed.pki["monitor"]
    return scrape(fed.metrics_ports[name], fed.pki["ca"].cert, monitor.cert, monitor.key)
