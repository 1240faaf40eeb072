"""``docrelay new-plugin NAME``: the generated distribution works as generated (its own
tests and the contract kit pass, run in a child pytest with its ``src`` on the import path
and its entry point visible), it carries no trace of the template's name, and bad names or
an occupied directory are refused with one line and exit code 2, writing nothing."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import docrelay
import pytest

DOCRELAY = [sys.executable, "-c", "from docrelay.cli import main; main()"]


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DOCRELAY, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``docrelay new-plugin acme_einvoice`` run in an empty directory."""
    work = tmp_path_factory.mktemp("new-plugin")
    result = _cli("new-plugin", "acme_einvoice", cwd=work)
    assert result.returncode == 0, result.stderr
    return work / "docrelay-acme-einvoice"


def _import_path(root: Path, tmp: Path) -> str:
    """The generated ``src`` plus a throwaway ``.dist-info`` holding its entry point, built
    from the generated pyproject (as an install would)."""
    project = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    entry_points = project["entry-points"]["docrelay.plugins"]
    dist_info = tmp / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n",
        encoding="utf-8",
    )
    lines = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (dist_info / "entry_points.txt").write_text(f"[docrelay.plugins]\n{lines}", encoding="utf-8")
    return os.pathsep.join([str(root / "src"), str(tmp)])


def test_generated_plugin_passes_its_tests_and_the_contract_kit(
    generated: Path, tmp_path: Path
) -> None:
    """The generated tests (classifier table, sandbox over HTTP, the whole contract suite)
    pass as generated, from the generated directory."""
    env = {**os.environ, "PYTHONPATH": _import_path(generated, tmp_path)}
    env.pop("PYTEST_ADDOPTS", None)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", "tests"],
        cwd=generated,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    contract = [
        ln for ln in result.stdout.splitlines() if ln.startswith("PASSED tests/test_contract")
    ]
    kit = [n for n in dir(docrelay.testing.ProviderContractTests) if n.startswith("test_")]
    assert len(contract) == len(kit)
    assert "docrelay plugins" not in result.stderr


@pytest.fixture
def generated_module(generated: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    monkeypatch.syspath_prepend(str(generated / "src"))
    yield importlib.import_module("docrelay_acme_einvoice")
    for name in [n for n in sys.modules if n.partition(".")[0] == "docrelay_acme_einvoice"]:
        del sys.modules[name]


def test_generated_plugin_delivers_through_a_relay(
    generated_module: object, tmp_path: Path
) -> None:
    """Registered directly, the generated provider delivers a document to its own sandbox."""
    sandbox_cls = generated_module.AcmeEinvoiceSandbox  # type: ignore[attr-defined]
    with sandbox_cls() as sandbox:
        relay = docrelay.Relay(
            store=f"sqlite:///{tmp_path / 'r.db'}",
            providers={"acme_einvoice": {"base_url": sandbox.url, "api_key": "sandbox-key"}},
            plugins=[generated_module],
            autoload=False,
        )
        relay.submit(
            docrelay.Document(
                id="INV-1",
                provider="acme_einvoice",
                payload=b'{"number": "INV-1"}',
                content_type="application/json",
            )
        )
        result = relay.run_until_settled(timeout=30)
        relay.close()
        effects = list(sandbox.effects)

    assert [s.state for s in result] == [docrelay.DocState.DELIVERED]
    assert len(effects) == 1


def test_generated_plugin_names_its_own_provider_everywhere(generated: Path) -> None:
    """No file or path of the generated plugin still says "template"; the entry point, the
    distribution and the package carry the new name."""
    leftovers = [
        f"{p.relative_to(generated)}:{n}"
        for p in generated.rglob("*")
        if p.is_file()
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if "template" in line.lower()
    ]
    paths = [str(p.relative_to(generated)) for p in generated.rglob("*") if "template" in str(p)]
    project = tomllib.loads((generated / "pyproject.toml").read_text(encoding="utf-8"))

    assert leftovers == []
    assert paths == []
    assert project["project"]["name"] == "docrelay-acme-einvoice"
    assert project["project"]["entry-points"]["docrelay.plugins"] == {
        "acme_einvoice": "docrelay_acme_einvoice"
    }
    assert (generated / "src" / "docrelay_acme_einvoice" / "sandbox.py").is_file()


@pytest.mark.parametrize(
    "name",
    ["", "Acme", "1acme", "acme-x", "acme x", "acme__x", "acme_", "class", "template",
     "a" * 41, "acme\nx", "../acme", "acmé"],
)  # fmt: skip
def test_bad_names_are_refused_with_one_line(name: str, tmp_path: Path) -> None:
    """A name that cannot be a provider id: one line on stderr, exit code 2, nothing written."""
    result = _cli("new-plugin", name, cwd=tmp_path)

    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("docrelay: error: invalid plugin name")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_occupied_directory_is_refused_and_left_alone(tmp_path: Path) -> None:
    """The target exists with content: exit code 2, its content untouched, nothing added."""
    target = tmp_path / "docrelay-acme"
    target.mkdir()
    (target / "notes.txt").write_text("mine", encoding="utf-8")

    result = _cli("new-plugin", "acme", cwd=tmp_path)

    assert result.returncode == 2
    assert "already exists" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docrelay-acme"]
