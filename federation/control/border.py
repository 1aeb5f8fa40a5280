"""What of a job may leave the site that runs it, by the policy's rules for its datasets: the
federation tells each site in the job's assignments, refuses what a site sends beyond it, and says
where the logs it never receives can be read."""
from __future__ import annotations

import policies
from federation.control.core import Core
from federation.control.snapshot import catalog
from federation.jobs import Job


class Border:
    """The rules and the catalog as they stand now, read once for the jobs of one report or answer."""

    def __init__(self, core: Core) -> None:
        self.rules = core.rules
        self.catalog = catalog(core.store.list_sites(), core.policy)

    def may_cross(self, job: Job) -> frozenset[str]:
        return policies.may_cross(job.spec.spec.datasets, self.catalog, self.rules)

    def logs_kept(self, job: Job) -> str:
        """Why the job's logs (and its own messages) stay at its site, or ''."""
        return policies.kept_by(policies.LOGS, job.spec.spec.datasets, self.catalog, self.rules)


def kept_notice(job: Job, reason: str) -> str:
    """What `fedctl logs` says for a job whose logs stay at its site: why, and how to read them there."""
    sites = sorted({a.site for a in job.attempts if a.site})
    where = (f"site {sites[0]}" if len(sites) == 1 else f"sites {', '.join(sites)}" if sites
             else "the site that runs it")
    config = f"<site config of {sites[0]}>" if len(sites) == 1 else "<that site's config>"
    return (f"logs of job {job.id} stay at {where} ({reason}); "
            f"read them there: fedctl site logs {job.id} --config {config}")
