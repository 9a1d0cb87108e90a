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
