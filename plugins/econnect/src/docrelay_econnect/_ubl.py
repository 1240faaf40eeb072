"""Small, tolerant UBL helpers shared by the plugin and its sandbox."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import cast

import attrs

__all__ = [
    "CBC",
    "DOCUMENT_ID_MIN_LENGTH",
    "UblInfo",
    "is_valid_document_id",
    "peek_document_id",
    "read_ubl",
]

CBC = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
_UBL_ROOTS = {
    "Invoice": "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2",
    "CreditNote": "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2",
    "Order": "urn:oasis:names:specification:ubl:schema:xsd:Order-2",
}
_DOCTYPE = re.compile(rb"<!DOCTYPE|<!ENTITY", re.IGNORECASE)


@attrs.frozen
class UblInfo:
    """What a minimal look at a UBL document finds.

    :ivar root: the root element's local name (``Invoice``, ``CreditNote``, ``Order``...).
    :ivar namespace: the root element's namespace.
    :ivar id: the document number (``cbc:ID`` directly under the root), if any.
    :ivar problem: why the document is not acceptable UBL, or ``None``.
    """

    root: str | None
    namespace: str | None
    id: str | None
    problem: str | None

    @property
    def is_ubl(self) -> bool:
        return self.problem is None


def _parse(payload: bytes) -> ET.Element:
    # The payload is the ERP's own document (or, in the sandbox, a test client's). DTDs and
    # entity declarations are refused up front, so no entity expansion can happen; Python's
    # expat (>= 2.4.1) guards against expansion attacks as well.
    if _DOCTYPE.search(payload[:4096]):
        raise ValueError("DOCTYPE and ENTITY declarations are not allowed")
    return ET.fromstring(payload)  # noqa: S314 - DTDs refused above


#: What ElementTree raises for a body that is not XML it can read (LookupError: an unknown
#: encoding in the XML declaration).
_NOT_XML = (ET.ParseError, ValueError, UnicodeError, LookupError)


def _split(tag: str) -> tuple[str | None, str]:
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return None, tag


def read_ubl(payload: bytes, expected: tuple[str, ...] = ()) -> UblInfo:
    """Parse *payload* and check it is a UBL 2.x document, one of *expected* root names.

    Never raises; a problem is described in :attr:`UblInfo.problem`.
    """
    try:
        root = _parse(payload)
    except _NOT_XML as exc:
        return UblInfo(root=None, namespace=None, id=None, problem=f"body is not XML: {exc}")
    ns, local = _split(root.tag)
    doc_id: str | None = None
    for child in root:
        cns, clocal = _split(child.tag)
        if cns == CBC and clocal == "ID":
            doc_id = (child.text or "").strip() or None
            break
    if local not in _UBL_ROOTS or ns != _UBL_ROOTS[local]:
        return UblInfo(
            root=local,
            namespace=ns,
            id=doc_id,
            problem=f"root element {local!r} in namespace {ns!r} is not a UBL 2.1 document",
        )
    if expected and local not in expected:
        return UblInfo(
            root=local,
            namespace=ns,
            id=doc_id,
            problem=f"a UBL {local} cannot be sent here (expected {' or '.join(expected)})",
        )
    if doc_id is None:
        return UblInfo(root=local, namespace=ns, id=None, problem="cbc:ID is missing or empty")
    return UblInfo(root=local, namespace=ns, id=doc_id, problem=None)


_CBC_ID = f"{{{CBC}}}ID"
#: The first read of :func:`peek_document_id` (the number is near the top: at byte 520 in
#: the plugin's PEPPOL sample); each next read is twice as long.
_FIRST_READ = 1024


def peek_document_id(payload: bytes) -> str | None:
    """The document number as :func:`read_ubl` finds it (the text of the root's first direct
    ``cbc:ID`` child), read only up to that element's end.

    The same parser (ElementTree's, fed in growing pieces), so the same answer on nested
    ``cbc:ID`` elements, comments, CDATA, character references, prefixes and encodings;
    ``None`` wherever ``read_ubl(payload).id`` is ``None`` (DTDs refused alike). What it
    cannot see is the rest of the document: where it returns a number, ``read_ubl`` returns
    the same one, or none when the document is not well-formed further on. A caller whose
    answer depends on that parses the whole document then.
    """
    if _DOCTYPE.search(payload[:4096]):
        return None
    parser: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(("start", "end"))
    depth = 0
    start, size = 0, _FIRST_READ
    try:
        while start < len(payload):
            parser.feed(payload[start : start + size])
            start += size
            size *= 2
            # Only ("start" | "end", element) pairs with these events.
            events = cast("Iterator[tuple[str, ET.Element]]", parser.read_events())
            for event, element in events:
                if event == "start":
                    depth += 1
                    continue
                depth -= 1
                if depth == 1 and element.tag == _CBC_ID:
                    return (element.text or "").strip() or None
    except _NOT_XML:
        return None
    return None


#: Minimum length of an ``X-EConnect-DocumentId`` (seed 000).
DOCUMENT_ID_MIN_LENGTH = 6
#: The characters an ``X-EConnect-DocumentId`` may hold: letters, digits and ``-`` (a UUID).
_ALLOWED = re.compile(r"[A-Za-z0-9-]")
_VALID = re.compile(rf"[A-Za-z0-9-]{{{DOCUMENT_ID_MIN_LENGTH},}}")


def is_valid_document_id(value: str) -> str | None:
    """Why *value* cannot be an ``X-EConnect-DocumentId``, or ``None`` when it can.

    eConnect (seed 000): at least six characters, and no special characters ("like the @ or
    _"; a UUID is best practice). Only ASCII letters, digits and ``-`` are accepted: that is
    every UUID/GUID, and nothing eConnect could call special.
    """
    if _VALID.fullmatch(value):  # the usual case in one match; else find what is wrong
        return None
    if len(value) < DOCUMENT_ID_MIN_LENGTH:
        return f"must be at least {DOCUMENT_ID_MIN_LENGTH} characters long (got {len(value)})"
    for ch in value:
        if not (ch.isascii() and _ALLOWED.fullmatch(ch)):
            shown = repr(ch) if ch.isprintable() else f"U+{ord(ch):04X}"
            return f"must hold only letters, digits and '-' (found {shown})"
    return None
