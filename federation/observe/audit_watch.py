"""The audit chain verified as it grows, from where the last look left off: for the metrics and the
console's audit page."""
from __future__ import annotations

import logging
import threading

from federation.audit import GENESIS, Signer, verify
from federation.store import Store

log = logging.getLogger("federation.observe")
BATCH = 1000   # records verified a look (a signature not made here: ~0.3 ms), so a long log is caught up over several


class AuditWatch:
    def __init__(self, signer: Signer | None) -> None:
        self.signer = signer
        self.seq, self.head, self.broken = 0, GENESIS, ""
        self._lock = threading.Lock()   # looks may come at once (two Prometheus servers, a console page)

    def state(self, store: Store) -> tuple[int, str]:
        """(records verified, '' or what is wrong), after verifying the next batch. Once broken, it stays broken."""
        with self._lock:
            if self.signer is not None and not self.broken:
                self.signer.remember()
                try:
                    self.broken = self._check(store, self.signer)
                except Exception as e:   # a record that cannot even be read is no record the federation wrote
                    self.broken = f"a record after {self.seq} cannot be read: {type(e).__name__}"
                if self.broken:
                    log.error("the audit chain is broken: %s", self.broken)
            return self.seq, self.broken

    def _check(self, store: Store, signer: Signer) -> str:
        """The last record verified is read again (it must not have changed), then what follows it.
        Every signature is checked (or known to be this process's): the federation chains each record
        onto whatever is newest in the store, so a signed record does not vouch for the ones before it."""
        records = store.audit_records(max(0, self.seq - 1), BATCH + 1)
        if self.seq:
            again = records.pop(0) if records and records[0].seq == self.seq else None
            if again is None or again.hash != self.head or again.digest() != again.hash:
                return f"record {self.seq}: removed or changed after it was verified"
        if not records:
            return ""
        _, head, wrong = verify(records, signer.key.public_key(), self.seq, self.head, signer.signed_here)
        if not wrong:
            self.seq, self.head = records[-1].seq, head
        return wrong
