"""Webhooks (contract section 6): signed POSTs for job events, retried, stored, and
dead-lettered.

- ``policy``: which events call for a delivery (a pure decision the engine makes when it
  drafts an event; the store then writes the delivery in the event's own transaction, so a
  webhook never precedes its event and none is lost in a crash).
- ``guard``: which callback URLs may be called (no loopback, private or reserved address).
- ``sender``: the delivery loop, Standard Webhooks signing, retries with backoff.
- ``deliveries``: a job's deliveries and their attempts, and retrying a dead one.
"""
