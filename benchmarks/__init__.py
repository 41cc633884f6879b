"""Benchmarks of sse-jobs against peers measured in the same run.

Run ``python -m benchmarks all`` (or one name) from the repository root; see
``benchmarks/README.md`` for the questions, the peers, the targets and the latest table.
"""
