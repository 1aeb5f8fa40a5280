"""Asking the federation's replicas and witnesses whether any replica leads (`SiteService.Leader`).

A site whose lease is running out asks before it fences: if every answer says nobody leads, or
that the leader hears no site at all (it is the one cut off, or overloaded), nobody will re-place
this site's work, so it keeps running; if any answer names a leader that hears sites, or nobody
answers, the site may be cut off from a live federation and must fence.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc

from federation.v1 import federation_pb2 as pb
from federation.v1 import federation_pb2_grpc as pb_grpc


@dataclass(frozen=True)
class Verdict:
    leader: str        # the leader's address when some answer names one, else ""
    down_by: str       # when every answer said nobody can re-place work: who said what; else ""
    answered: int      # how many of those asked answered

    @property
    def federation_down(self) -> bool:
        return bool(self.down_by)


def ask(addresses: Sequence[str], channel_factory: Callable[[str], grpc.Channel], site: str,
        timeout_s: float) -> Verdict:
    """Ask every address at once, each within `timeout_s`."""
    with ThreadPoolExecutor(max_workers=max(1, len(addresses))) as pool:
        answers = [a for a in pool.map(lambda addr: _ask(addr, channel_factory, site, timeout_s), addresses) if a]
    leader = next((a.address for a in answers if a.live), "")
    acting = any(a.live and a.hears_sites for a in answers)
    down_by = "" if acting else "; ".join(
        f"{a.answered_by or '?'}: {'the leader hears no site' if a.live else 'nobody leads'}" for a in answers)
    return Verdict(leader=leader, down_by=down_by, answered=len(answers))


def _ask(address: str, channel_factory: Callable[[str], grpc.Channel], site: str,
         timeout_s: float) -> pb.LeaderResponse | None:
    channel = channel_factory(address)
    try:
        return pb_grpc.SiteServiceStub(channel).Leader(pb.LeaderRequest(site=site), timeout=timeout_s)
    except grpc.RpcError:
        return None
    finally:
        channel.close()
