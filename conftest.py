"""Top-level conftest: opt into docrelay's pytest fixtures (STYLE.md 8.19)."""

pytest_plugins = ["docrelay.testing"]
