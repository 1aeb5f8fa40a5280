"""Prices and elastic node types between specs, the wire, the store and the pure placement core.

What a site sends is validated by the same models as its YAML, so a registration with a negative
price or an unpriced GPU model is refused with the field's path, as the file would be.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from federation.errors import InvalidSpec
from federation.spec import pricing as spec
from federation.v1 import federation_pb2 as pb
from policies.pricing import Elastic, NodeType, Pricing, Rates

MAX_NODES_UP = 10_000


def pricing_of(p: spec.Pricing) -> Pricing:
    return Pricing(on_demand=_rates_of(p), spot=_rates_of(p.spot) if p.spot else None, egress_gb=p.egress_gb,
                   currency=p.currency)


def _rates_of(r: spec.Rates) -> Rates:
    return Rates(r.cpu_hour, r.memory_gib_hour, dict(r.gpu_hour))


def elastic_of(e: spec.Elastic, up: Mapping[str, int] | None = None) -> Elastic:
    return Elastic(tuple(NodeType(t.name, t.cpus, float(t.memory), t.max, t.gpus.count if t.gpus else 0,
                                  t.gpus.model if t.gpus else "", float(t.gpus.memory) if t.gpus else 0.0, t.min,
                                  t.spot, t.start) for t in e.node_types),
                   e.idle_timeout, dict(up or {}))


# ---------------------------------------------------------------- the wire

def pricing_to_pb(p: Pricing) -> pb.Pricing:
    return pb.Pricing(currency=p.currency, on_demand=_rates_pb(p.on_demand),
                      spot=_rates_pb(p.spot) if p.spot else None, egress_gb=p.egress_gb)


def _rates_pb(r: Rates) -> pb.Rates:
    return pb.Rates(cpu_hour=r.cpu_hour, memory_gib_hour=r.memory_gib_hour, gpu_hour=dict(r.gpu_hour))


def elastic_to_pb(e: Elastic) -> pb.Elastic:
    return pb.Elastic(node_types=[pb.NodeType(name=t.name, cpus=t.cpus, memory_bytes=int(t.memory), min=t.min,
                                              max=t.max, gpu_model=t.gpu_model, gpu_count=t.gpus,
                                              gpu_memory_bytes=int(t.gpu_memory), spot=t.spot, start_s=t.start_s)
                                  for t in e.node_types],
                      idle_timeout_s=e.idle_timeout_s, up=dict(e.up))


def pricing_from_pb(msg: pb.Pricing, where: str) -> spec.Pricing:
    """What a site says it costs, checked as its YAML would be."""
    rates = {"cpu_hour": msg.on_demand.cpu_hour, "memory_gib_hour": msg.on_demand.memory_gib_hour,
             "gpu_hour": dict(msg.on_demand.gpu_hour)}
    data: dict[str, Any] = {"currency": msg.currency, "egress_gb": msg.egress_gb, **rates}
    if msg.HasField("spot"):
        data["spot"] = {"cpu_hour": msg.spot.cpu_hour, "memory_gib_hour": msg.spot.memory_gib_hour,
                        "gpu_hour": dict(msg.spot.gpu_hour)}
    return _validate(spec.Pricing, data, where)


def elastic_from_pb(msg: pb.Elastic, pricing: spec.Pricing | None, where: str) -> Elastic:
    """An elastic site's node types, checked as its YAML would be, each priced."""
    types = [{"name": t.name, "cpus": t.cpus, "memory": t.memory_bytes, "min": t.min, "max": t.max, "spot": t.spot,
              "start": t.start_s,
              **({"gpus": {"model": t.gpu_model, "count": t.gpu_count, "memory": t.gpu_memory_bytes}}
                 if t.gpu_model or t.gpu_count else {})}
             for t in msg.node_types]
    e = _validate(spec.Elastic, {"node_types": types, "idle_timeout": msg.idle_timeout_s}, where)
    if pricing is None:
        raise InvalidSpec(f"{where}: an elastic site needs pricing (what its nodes cost)")
    try:
        spec.check_priced(pricing, e, set())
    except ValueError as err:
        raise InvalidSpec(str(err)) from None
    return elastic_of(e, nodes_up(msg.up, e.node_types, f"{where}.up"))


def nodes_up(up: Mapping[str, int], types: Any, where: str) -> dict[str, int]:
    """Nodes alive per type, as an agent reports them: only its types, never negative or past bounds."""
    names = {t.name for t in types}
    out = {}
    for name, n in up.items():
        if name not in names:
            raise InvalidSpec(f"{where}: {name[:64]!r} is not one of the site's node types")
        if not 0 <= n <= MAX_NODES_UP:
            raise InvalidSpec(f"{where}.{name}: {n} nodes is not between 0 and {MAX_NODES_UP}")
        out[name] = int(n)
    return out


def _validate(model: Any, data: dict[str, Any], where: str) -> Any:
    try:
        return model(**data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise InvalidSpec(f"{where}{'.' + loc if loc else ''}: {err['msg']}") from None


# ---------------------------------------------------------------- the store

def pricing_to_json(p: Pricing | None) -> str:
    if p is None:
        return ""
    return json.dumps({"currency": p.currency, "on_demand": _rates_dict(p.on_demand),
                       "spot": _rates_dict(p.spot) if p.spot else None, "egress_gb": p.egress_gb})


def _rates_dict(r: Rates) -> dict[str, Any]:
    return {"cpu_hour": r.cpu_hour, "memory_gib_hour": r.memory_gib_hour, "gpu_hour": dict(r.gpu_hour)}


def pricing_from_json(text: str) -> Pricing | None:
    if not text:
        return None
    d = json.loads(text)
    return Pricing(on_demand=Rates(**d["on_demand"]), spot=Rates(**d["spot"]) if d["spot"] else None,
                   egress_gb=d["egress_gb"], currency=d["currency"])


def elastic_to_json(e: Elastic | None) -> str:
    if e is None:
        return ""
    return json.dumps({"node_types": [{f: getattr(t, f) for f in NodeType.__slots__} for t in e.node_types],
                       "idle_timeout_s": e.idle_timeout_s, "up": dict(e.up)})


def elastic_from_json(text: str) -> Elastic | None:
    if not text:
        return None
    d = json.loads(text)
    return Elastic(tuple(NodeType(**t) for t in d["node_types"]), d["idle_timeout_s"], d["up"])
