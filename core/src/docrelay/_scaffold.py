"""``docrelay new-plugin NAME``: write a working provider plugin distribution.

The source is the template plugin itself (``plugins/_template`` in the repository, shipped in
the wheel as ``docrelay/_scaffold/template``): one copy, tested as it is. Generating renames
the provider id ``template`` in every file and path, in the spelling each place uses
(``template``, ``Template``, ``TEMPLATE``, ``docrelay-template``).
"""

from __future__ import annotations

import keyword
import re
import shutil
import tempfile
from pathlib import Path

from .exceptions import ConfigError

__all__ = ["new_plugin", "template_root", "validate_name"]

_NAME_RE = re.compile(r"[a-z][a-z0-9]*(?:_[a-z0-9]+)*")
_MAX_NAME = 40
#: Names that would shadow docrelay's own modules or the generator's source.
_RESERVED = frozenset({"template", "testing", "sandbox", "helpers", "cli", "builtins"})
_SKIP = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"})


def template_root() -> Path:
    """The template plugin's directory: shipped in the wheel, or the repository checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_scaffold" / "template", here.parents[2] / "plugins" / "_template"):
        if (candidate / "pyproject.toml").is_file():
            return candidate
    raise ConfigError("the plugin template is missing from this docrelay installation")


def validate_name(name: str) -> str:
    """Return *name* if it can be a provider id, else raise :class:`ConfigError` (one line)."""
    shown = name if name.isprintable() else repr(name)
    if not _NAME_RE.fullmatch(name) or len(name) > _MAX_NAME:
        raise ConfigError(
            f"invalid plugin name {shown!r}: use 1-{_MAX_NAME} lowercase letters, digits and "
            "single underscores, starting with a letter (e.g. acme or acme_einvoice)"
        )
    if keyword.iskeyword(name) or name in _RESERVED:
        raise ConfigError(f"invalid plugin name {name!r}: it is reserved; choose another")
    _refuse_installed(name)
    return name


def _refuse_installed(name: str) -> None:
    """A name an installed plugin already has: installing the generated distribution
    (``docrelay-NAME``, entry point ``NAME``) would replace or shadow that plugin."""
    from importlib import metadata

    dist = f"docrelay-{name.replace('_', '-')}"
    taken = {ep.name for ep in metadata.entry_points(group="docrelay.plugins")}
    try:
        metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        installed = False
    else:
        installed = True
    if name in taken or installed:
        raise ConfigError(
            f"invalid plugin name {name!r}: an installed plugin is already called {name} "
            f"(or the distribution {dist} is installed); installing this one would replace "
            "it: choose another name"
        )


def _renamer(name: str) -> tuple[re.Pattern[str], dict[str, str]]:
    dashed = name.replace("_", "-")
    camel = "".join(part.capitalize() for part in name.split("_"))
    table = {
        "docrelay-template": f"docrelay-{dashed}",
        "template-provider": f"{dashed}-provider",
        "template": name,
        "Template": camel,
        "TEMPLATE": name.upper(),
    }
    pattern = re.compile("|".join(re.escape(k) for k in sorted(table, key=len, reverse=True)))
    return pattern, table


def new_plugin(name: str, directory: Path | None = None) -> tuple[Path, list[Path]]:
    """Write the plugin distribution ``docrelay-NAME`` into *directory* (default
    ``./docrelay-NAME``), which must not exist yet or be empty. Returns the directory and
    the files written, relative to it. Nothing is left behind when writing fails."""
    validate_name(name)
    target = (
        Path(directory) if directory is not None else Path(f"docrelay-{name.replace('_', '-')}")
    )
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"{str(target)!r} already exists and is not an empty directory")
    source = template_root()
    pattern, table = _renamer(name)

    def rename(text: str) -> str:
        return pattern.sub(lambda m: table[m.group(0)], text)

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".docrelay-new-plugin-", dir=target.parent))
    written: list[Path] = []
    try:
        for path in sorted(source.rglob("*")):
            rel = path.relative_to(source)
            if path.is_dir() or _SKIP & set(rel.parts) or path.suffix in {".pyc", ".pyo"}:
                continue
            out = staging / rename(rel.as_posix())
            out.parent.mkdir(parents=True, exist_ok=True)
            data = path.read_bytes()
            try:
                out.write_text(rename(data.decode("utf-8")), encoding="utf-8")
            except UnicodeDecodeError:
                out.write_bytes(data)
            written.append(out.relative_to(staging))
        if target.exists():
            target.rmdir()
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target, written
