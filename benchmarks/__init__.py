"""docrelay's performance harness (not part of the test run).

``python -m benchmarks`` (from the repository root, in the README's environment) runs B1-B5
(and B6 when a PostgreSQL server is configured), prints a table and writes
``benchmarks/results/latest.json``. See docs/performance.md.
"""
