"""The domain (no HTTP, no SQL): the engine and its collaborators.

- ``admission``: validation, idempotency, quotas, callback check: new jobs in.
- ``engine``: dispatch, outcomes, retries, cancel, recovery, shutdown.
- ``progress``: coalescing, ETA and backpressure of running attempts' progress.
- ``pool``: the bounded process pool that runs job code.
- ``jobs``: reading and deleting jobs on behalf of a principal.
- ``results``: result files, contained in each job's own directory.
- ``retention``: removing finished jobs after ``--retention``.
"""
