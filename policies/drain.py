"""When each GPU node empties, so that placement can keep nodes emptying together.

With time limits known (backfill), a job's GPUs are taken on a node whose work (running and
reserved) already ends no sooner than the job does, where there is one: a job that would keep a
node busy past its other work pushes back the moment the whole node is free again, which is when
a job asking for the whole node (or a whole NVLink domain) can start. Long small jobs gather on
nodes that are busy for long anyway; nodes running short work empty soon, whole. Ends within one
STEP_S of each other count as the same, so that inside that band the packing rule (FGD, best
fit) decides. Whole GPUs placed node by node (a single GPU without FGD) keep best fit alone: timed
too, they spread over emptier nodes, and in `fedctl simulate --mode load` the 8-GPU jobs waited
longer.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STEP_S = 3600.0


@dataclass(frozen=True, slots=True)
class Drain:
    """Per GPU node (federation-wide index), when its work ends; and when the job being placed would."""

    node_end: np.ndarray
    end: float

    def late(self, nodes: np.ndarray) -> np.ndarray:
        """How far the job would push back each node's emptying, in whole steps (0: not at all)."""
        return np.floor(np.maximum(0.0, self.end - self.node_end[nodes]) / STEP_S)
