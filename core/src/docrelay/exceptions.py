"""Errors and warnings.

::

    DocrelayError
    ├── ConfigError            bad or missing configuration (exit code 2)
    │   └── UnknownProviderError
    ├── DocumentError          a document that cannot be valid (too large, bad id, bad body)
    ├── OutcomeError           raised by a hook to end an attempt with a given outcome
    ├── StoreError             the state store is unreachable, corrupt, foreign or too new
    │   └── SchemaTooNewError
    └── NotFoundError          no such document

    DocrelayWarning(UserWarning)

Every message is one line, free of secrets, meant for the person at the terminal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, final

if TYPE_CHECKING:
    from ._models import Outcome

__all__ = [
    "ConfigError",
    "DocrelayError",
    "DocrelayWarning",
    "DocumentError",
    "NotFoundError",
    "OutcomeError",
    "SchemaTooNewError",
    "StoreError",
    "UnknownProviderError",
]


class DocrelayError(Exception):
    """Root of every docrelay error."""


class ConfigError(DocrelayError, ValueError):
    """The configuration is missing, malformed or refers to something that does not exist."""


@final
class UnknownProviderError(ConfigError):
    """No installed (and enabled) plugin provides this provider."""


class DocumentError(DocrelayError, ValueError):
    """A document that cannot be delivered as it is (refused before sending)."""


class OutcomeError(DocrelayError):
    """Raised by a hook (a token fetch in ``prepare_headers``, a lookup in ``reconcile``) to
    end the attempt with :attr:`outcome`, e.g. ``config_error`` when the token endpoint
    refuses the client credentials, ``retry`` when it is down."""

    def __init__(self, outcome: Outcome) -> None:
        from ._redact import redact_outcome  # no secret rides on an exception

        outcome = redact_outcome(outcome)
        super().__init__(outcome.describe())
        self.outcome = outcome


class StoreError(DocrelayError):
    """The state store cannot be used."""


@final
class SchemaTooNewError(StoreError):
    """The store was written by a newer docrelay; it is refused, never rewritten."""


@final
class NotFoundError(DocrelayError, KeyError):
    """No document with that id in the store."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not found"


class DocrelayWarning(UserWarning):
    """Base of docrelay's warnings."""

    __module__ = "docrelay"
