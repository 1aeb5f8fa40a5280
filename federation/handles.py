"""Handles on what the SDK submitted: a job, an array of jobs, a federated training. Each holds
the `Client` it came from and asks the federation through it."""
from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from federation.errors import Timeout, Unavailable
from federation.results import JobStatus, Placement, TrainingStatus, training_status
from federation.v1 import federation_pb2 as pb

if TYPE_CHECKING:
    from federation.client import Client


class Job:
    """A handle on a submitted job."""

    def __init__(self, client: Client, job_id: str, last: JobStatus | None = None) -> None:
        self._client = client
        self.id = job_id
        self._last = last

    def __repr__(self) -> str:
        return f"Job({self.id!r})"

    def status(self) -> JobStatus:
        self._last = self._client.get(self.id)
        return self._last

    def wait(self, timeout: float | None = None, on_change: Callable[[JobStatus], None] = lambda s: None) -> JobStatus:
        """Block until the job ends, telling `on_change` each state it passes through; rides out
        federation restarts. Raises federation.errors.Timeout."""
        deadline, delay = None if timeout is None else time.monotonic() + timeout, 0.1
        while True:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise Timeout(f"job {self.id} still {self._last.state if self._last else 'unknown'} after {timeout:g}s")
            try:
                for status in self._client.watch(self.id, timeout=remaining):
                    self._last = status
                    on_change(status)
                    if status.terminal:
                        return status
            except Unavailable:
                self._client._next_replica(self._client.address)
                time.sleep(min(delay * (0.5 + random.random()), max(0.0, remaining or delay)))
                delay = min(delay * 2, 2.0)

    def logs(self) -> str:
        """The job's logs; where the rules of its data keep them at its site, the line that says so."""
        return self._client.logs(self.id)

    def follow_logs(self) -> Iterator[bytes]:
        return self._client.stream_logs(self.id, follow=True)

    def cancel(self) -> JobStatus:
        self._last = self._client.cancel(self.id)
        return self._last

    @property
    def placement(self) -> Placement:
        return self._client.explain(self.id)


class Training:
    """A handle on a submitted federated training."""

    def __init__(self, client: Client, training_id: str) -> None:
        self._client = client
        self.id = training_id

    def __repr__(self) -> str:
        return f"Training({self.id!r})"

    def status(self) -> TrainingStatus:
        return training_status(self._client._call("GetTraining",
                                                   pb.GetTrainingRequest(id=self.id)).training)

    def wait(self, timeout: float | None = None, poll: float = 0.5,
             on_change: Callable[[TrainingStatus], None] = lambda t: None) -> TrainingStatus:
        """Block until the training ends. Raises federation.errors.Timeout. `on_change` sees each look."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            on_change(status := self.status())
            if status.terminal:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                raise Timeout(f"training {self.id} still at round {status.round} after {timeout:g}s: {status.message}")
            time.sleep(poll)

    def cancel(self) -> TrainingStatus:
        return training_status(self._client._call("CancelTraining",
                                                   pb.CancelTrainingRequest(id=self.id), retry=False).training)

    def model(self) -> dict[str, Any]:
        """The current global model as named NumPy arrays."""
        import io

        import numpy as np
        r = self._client._call("GetTrainingModel", pb.GetTrainingModelRequest(id=self.id))
        with np.load(io.BytesIO(r.model), allow_pickle=False) as data:
            return {k: data[k] for k in data.files}


class JobArray:
    """A handle on the elements of a job array (in index order) or the parts of a gang."""

    def __init__(self, client: Client, array_id: str, jobs: list[Job]) -> None:
        self._client = client
        self.id = array_id
        self.jobs = jobs

    def __repr__(self) -> str:
        return f"JobArray({self.id!r}, {len(self.jobs)} elements)"

    def __len__(self) -> int:
        return len(self.jobs)

    def __iter__(self) -> Iterator[Job]:
        return iter(self.jobs)

    def statuses(self) -> list[JobStatus]:
        return [j.status() for j in self.jobs]

    def wait(self, timeout: float | None = None, on_change: Callable[[JobStatus], None] = lambda s: None
             ) -> list[JobStatus]:
        """Block until every element ends. Raises federation.errors.Timeout."""
        end = None if timeout is None else time.monotonic() + timeout
        return [j.wait(None if end is None else max(0.0, end - time.monotonic()), on_change) for j in self.jobs]

    def cancel(self) -> list[JobStatus]:
        return [j.cancel() for j in self.jobs if not j.status().terminal]
