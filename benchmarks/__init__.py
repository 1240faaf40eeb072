"""docrelay's performance harness (not part of the test run).

From the repository root, in the README's environment:

- ``python -m benchmarks compare [--docs 2000] [--rounds 3] [--delay 0|0.02] [--workers 1|16]
  [--pg]``: docrelay side by side with a bare ``requests`` loop, a hand-written SQLite loop,
  huey and procrastinate on the eConnect send; a ratio table and
  ``benchmarks/results/compare-*.json`` (``benchmarks/compare.py``).
- ``python -m benchmarks profile [--docs 2000]``: cProfile of the docrelay library side.
- ``python -m benchmarks [B1 ...]``: B1-B5 (and B6 when a PostgreSQL server is configured),
  a table and ``benchmarks/results/latest.json``.

See docs/performance.md; the peers' packages are in ``benchmarks/requirements.txt``.
"""
