"""What holds a pending job back before placement: dependencies, singletons, array limits.

Pure: the control plane passes the states of the jobs depended on and what is active
(placed or running) now; jobs held here are not offered to `schedule` this cycle.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from policies.model import Reason

ENDED = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True, slots=True)
class Waiting:
    """A pending job as the hold rules see it."""

    id: str
    tenant: str
    name: str
    submitted_at: float
    after: tuple[tuple[str, str], ...] = ()   # (after_ok | after_any | after_not_ok, job or array id)
    singleton: bool = False
    array_id: str = ""
    array_index: int = 0
    throttle: int | None = None               # of its array: at most this many active at once


@dataclass(frozen=True, slots=True)
class Hold:
    reason: Reason
    detail: str
    never: bool = False        # the hold can never lift (a dependency ended the wrong way)


def dependency(kind: str, ref: str, states: Sequence[str]) -> Hold | None:
    """None when the dependency on `ref` (a job, or an array's elements) is met."""
    if not states:
        return Hold(Reason.DEPENDENCY, f"{kind} {ref}: no such job", never=True)
    ended = all(s in ENDED for s in states)
    what = ref if len(states) == 1 else f"array {ref} ({_tally(states)})"
    if kind == "after_any":
        return None if ended else Hold(Reason.DEPENDENCY, f"after_any {what}: not ended yet")
    want_ok = kind == "after_ok"
    wrong = [s for s in states if s in ENDED and (s == "succeeded") != want_ok]
    if wrong:
        return Hold(Reason.DEPENDENCY, f"{kind} {what}: ended {wrong[0]}; this job can never start", never=True)
    if not ended:
        return Hold(Reason.DEPENDENCY, f"{kind} {what}: {'not succeeded' if want_ok else 'not ended'} yet"
                    + (f" ({states[0]})" if len(states) == 1 else ""))
    return None


def _tally(states: Sequence[str]) -> str:
    return ", ".join(f"{n} {s}" for s, n in sorted(Counter(states).items()))


def holds(waiting: Sequence[Waiting], states: Mapping[str, Sequence[str]], active_names: Counter,
          active_arrays: Counter) -> dict[str, Hold]:
    """Per held job id, why. `states`: per referenced id, the states of that job or of the array's
    elements; `active_names`: placed or running singleton-relevant jobs by (tenant, name);
    `active_arrays`: placed or running elements by array id."""
    out: dict[str, Hold] = {}
    for w in waiting:
        for kind, ref in w.after:
            hold = dependency(kind, ref, states.get(ref, ()))
            if hold is not None:
                out[w.id] = hold
                break
    free = [w for w in waiting if w.id not in out]
    singles: dict[tuple[str, str], list[Waiting]] = defaultdict(list)
    for w in free:
        if w.singleton:
            singles[(w.tenant, w.name)].append(w)
    for key, group in singles.items():
        group.sort(key=lambda w: (w.submitted_at, w.id))
        running = active_names[key]
        for w in group[0 if running else 1:]:
            out[w.id] = Hold(Reason.SINGLETON, f"singleton: another job named {key[1]} of tenant {key[0]} "
                                               f"{'is active' if running else 'was submitted first'}")
    arrays: dict[str, list[Waiting]] = defaultdict(list)
    for w in free:
        if w.array_id and w.throttle and w.id not in out:
            arrays[w.array_id].append(w)
    for array_id, group in arrays.items():
        group.sort(key=lambda w: w.array_index)
        throttle = group[0].throttle
        assert throttle is not None   # only throttled arrays are grouped
        room = max(0, throttle - active_arrays[array_id])
        for w in group[room:]:
            out[w.id] = Hold(Reason.ARRAY_LIMIT, f"array {array_id} runs at most {throttle} at once "
                                                 f"({active_arrays[array_id]} active)")
    return out
