"""Plumbing for the fault suite: the ``--fault-scale`` option and the kit module.

``pytest --fault-scale`` (or ``DOCRELAY_FAULT_DOCS=10000 DOCRELAY_FAULT_KILLS=5``) runs the
full-scale fault run; without it, tests that ask for the ``fault_scale`` fixture are skipped
(they are also marked ``slow``). Other ``slow`` tests are left alone.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

HERE = Path(__file__).parent

# Hypothesis keeps its caches and example database outside the repository: a ``.hypothesis``
# directory in the root makes the next collection warn, and warnings are errors here.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "docrelay-hypothesis")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fault-scale",
        action="store_true",
        default=False,
        help="run the full-scale fault suite (DOCRELAY_FAULT_DOCS, default 10000 documents; "
        "DOCRELAY_FAULT_KILLS, default 5 kills)",
    )


@pytest.fixture(scope="session")
def fault_kit() -> ModuleType:
    """tests/fault_worker.py as a module (tests are imported with --import-mode=importlib)."""
    name = "docrelay_fault_worker"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / "fault_worker.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fault_scale(request: pytest.FixtureRequest) -> tuple[int, int]:
    """(documents, kills) of the full-scale run; skips unless it was asked for."""
    env_docs = os.environ.get("DOCRELAY_FAULT_DOCS")
    if not request.config.getoption("--fault-scale") and not env_docs:
        pytest.skip("full-scale fault run: pass --fault-scale or set DOCRELAY_FAULT_DOCS")
    return int(env_docs or 10_000), int(os.environ.get("DOCRELAY_FAULT_KILLS", "5"))
