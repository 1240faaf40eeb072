"""The SQL store shared by the SQLite and PostgreSQL backends: its jobs put together.

A backend only provides connections, transactions and the dialect attributes of
:class:`~docrelay._store.sql.SQLBase`; every statement is here, once."""

from __future__ import annotations

from .claims import Claims
from .documents import Documents
from .limits import Limits
from .notes import Notifications
from .transitions import Transitions

__all__ = ["SQLStore"]


class SQLStore(Documents, Claims, Transitions, Notifications, Limits):
    """The store in SQL; subclasses provide connections and dialect details."""
