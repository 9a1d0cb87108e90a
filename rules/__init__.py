"""The opt-out domain: no SMPP, no HTTP.

* `rules.model` -- value types and typed errors shared by every layer.
* `rules.numbers`, `rules.keywords` -- one spelling per subscriber; what an
  MO text asks for.
* `rules.decision`, `rules.mo`, `rules.replies` -- pure logic: the send-time
  decision, what an MO does, the auto-reply texts.
* `rules.index` -- the in-memory unsubscribed index (the hot path).
* `rules.store` -- the durable store behind one interface: SQLite for one
  host, PostgreSQL for a fleet; versioned migrations per backend.
* `rules.csvio` -- CSV import/export of the unsubscribed list.
* `rules.service.OptOutService` -- the one facade the SMPP relay and the
  HTTP API call.
"""

import os as _os

# numpy (the index's arrays) loads OpenBLAS, which starts a thread per core
# that spins between jobs; nothing here does linear algebra, and on the relay
# those threads took a few percent of the process's CPU. Must be set before
# numpy is imported; an operator's own setting wins.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
    _os.environ.setdefault(_name, "1")
