"""build_request's refusal of a documentId equal to the invoice number, on hostile UBL.

The invoice number is the text of the root's first direct ``cbc:ID`` child, as a full
ElementTree parse of the document reads it; a document that is not well-formed XML (or
declares a DTD) has no number, so it is not refused here (eConnect answers it with a 400).
These cases were written against the full parse and must give the same answers whatever
reads the number (the plugin now stops reading at that ``cbc:ID``).
"""

from __future__ import annotations

from typing import Any

import docrelay_econnect as plugin
import pytest
from docrelay import Context, Document, DocumentError
from docrelay_econnect import _ubl, build_request
from docrelay_econnect._demo import sample
from docrelay_econnect._ubl import read_ubl

NUMBER = "INV-2024-0101"
OTHER = "INV-2024-9999"
UUID = "0b5f3c8e-6d1a-5e2b-9f4c-3a7d2e1b0c9f"
CBC = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
CAC = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
INVOICE = "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n'
#: About 3 KB of lines before the number: more than one read of the early stop.
FILLER = "".join(f"  <cbc:Note>line {i} {'x' * 60}</cbc:Note>\n" for i in range(40))


class _NoServices:
    """build_request makes no call to the engine's services."""


def make_ctx(key: str, **settings: Any) -> Context:
    info = plugin.provider_info()
    resolved = {s.name: s.default for s in info.settings}
    resolved.update({"client_id": "cid", "client_secret": "csecret", "party_id": "NL:KVK:1"})
    resolved.update(settings)
    return Context(provider=info, settings=resolved, base_url="http://127.0.0.1:8701",
                   environment=None, services=_NoServices(), key=key)  # type: ignore[arg-type]  # fmt: skip


def invoice(payload: bytes) -> Document:
    return Document(id="inv-1", provider="econnect", payload=payload, kind="invoice")


def ubl(body: str, *, head: str = HEAD, root: str = "Invoice", ns: str = INVOICE) -> bytes:
    return (
        f'{head}<{root} xmlns="{ns}" xmlns:cac="{CAC}" xmlns:cbc="{CBC}">\n'
        "  <cbc:CustomizationID>urn:cen.eu:en16931:2017</cbc:CustomizationID>\n"
        f"{body}\n"
        "  <cbc:IssueDate>2024-04-15</cbc:IssueDate>\n"
        f"</{root}>\n"
    ).encode()


#: (name, payload, refused): refused means the number equals the key NUMBER.
CASES: list[tuple[str, bytes, bool]] = [
    ("plain", ubl(f"<cbc:ID>{NUMBER}</cbc:ID>"), True),
    ("other number", ubl(f"<cbc:ID>{OTHER}</cbc:ID>"), False),
    ("no number", ubl(""), False),
    ("the sample", sample("invoice-INV-2024-0101.xml"), True),
    (
        "nested cbc:ID first, the root's own after",
        ubl(f"<cac:X><cbc:ID>{NUMBER}</cbc:ID></cac:X><cbc:ID>{OTHER}</cbc:ID>"),
        False,
    ),
    (
        "nested other first, the root's own is the number",
        ubl(f"<cac:X><cac:Y><cbc:ID>{OTHER}</cbc:ID></cac:Y></cac:X><cbc:ID>{NUMBER}</cbc:ID>"),
        True,
    ),
    ("nested only", ubl(f"<cac:X><cbc:ID>{NUMBER}</cbc:ID></cac:X>"), False),
    ("comment inside the number", ubl("<cbc:ID>INV-2024<!-- c -->-0101</cbc:ID>"), True),
    (
        "a commented-out number first",
        ubl(f"<!-- <cbc:ID>{NUMBER}</cbc:ID> --><cbc:ID>{OTHER}</cbc:ID>"),
        False,
    ),
    ("CDATA number", ubl(f"<cbc:ID><![CDATA[{NUMBER}]]></cbc:ID>"), True),
    ("CDATA and text", ubl("<cbc:ID>INV-<![CDATA[2024]]>-0101</cbc:ID>"), True),
    (
        "a number inside CDATA first",
        ubl(f"<cbc:Note><![CDATA[<cbc:ID>{NUMBER}</cbc:ID>]]></cbc:Note><cbc:ID>{OTHER}</cbc:ID>"),
        False,
    ),
    (
        "a processing instruction first",
        ubl(f"<?pi <cbc:ID>{NUMBER}</cbc:ID>?><cbc:ID>{OTHER}</cbc:ID>"),
        False,
    ),
    ("another prefix", ubl(f'<b:ID xmlns:b="{CBC}">{NUMBER}</b:ID>'), True),
    ("the default namespace", ubl(f'<ID xmlns="{CBC}">{NUMBER}</ID>'), True),
    ("cbc bound elsewhere", ubl(f'<cbc:ID xmlns:cbc="urn:other">{NUMBER}</cbc:ID>'), False),
    ("the root's namespace", ubl(f"<ID>{NUMBER}</ID>"), False),
    ("no namespace", ubl(f'<ID xmlns="">{NUMBER}</ID>'), False),
    ("spaces and case", ubl("<cbc:ID>\n  inv-2024-0101 \t</cbc:ID>"), True),
    ("character references", ubl("<cbc:ID>INV&#45;2024&#x2D;0101</cbc:ID>"), True),
    ("predefined entity", ubl("<cbc:ID>INV-2024-0101&amp;</cbc:ID>"), False),
    ("a child element in the number", ubl(f"<cbc:ID>{NUMBER}<x/>tail</cbc:ID>"), True),
    ("text only after a child", ubl(f"<cbc:ID><x/>{NUMBER}</cbc:ID>"), False),
    ("an empty number first", ubl(f"<cbc:ID/><cbc:ID>{NUMBER}</cbc:ID>"), False),
    ("a blank number first", ubl(f"<cbc:ID>  </cbc:ID><cbc:ID>{NUMBER}</cbc:ID>"), False),
    ("other first, number second", ubl(f"<cbc:ID>{OTHER}</cbc:ID><cbc:ID>{NUMBER}</cbc:ID>"),
     False),
    ("far down", ubl(f"{FILLER}<cbc:ID>{NUMBER}</cbc:ID>"), True),
    ("far down in a long element",
     ubl(f"<cbc:Note>{'y' * 5000}</cbc:Note><cbc:ID>{NUMBER}</cbc:ID>"), True),
    ("attributes", ubl(f'<cbc:ID schemeID="0088" a="&lt;&gt;">{NUMBER}</cbc:ID>'), True),
    ("a root that is not UBL", ubl(f"<cbc:ID>{NUMBER}</cbc:ID>", root="Foo"), True),
    ("a root in another namespace", ubl(f"<cbc:ID>{NUMBER}</cbc:ID>", ns="urn:x"), True),
    ("a credit note", ubl(f"<cbc:ID>{NUMBER}</cbc:ID>", root="CreditNote",
                          ns="urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2"), True),
    (
        "latin-1",
        ubl(f"<cbc:Note>caf\u00e9</cbc:Note><cbc:ID>{NUMBER}</cbc:ID>",
            head='<?xml version="1.0" encoding="ISO-8859-1"?>\n').decode().encode("latin-1"),
        True,
    ),
    ("utf-16", ubl(f"<cbc:ID>{NUMBER}</cbc:ID>", head="").decode().encode("utf-16"), True),
    ("utf-8 BOM", b"\xef\xbb\xbf" + ubl(f"<cbc:ID>{NUMBER}</cbc:ID>"), True),
    # Not well-formed, or refused before parsing: no number, so not refused here.
    ("malformed after the number", ubl(f"<cbc:ID>{NUMBER}</cbc:ID><cbc:Note>"), False),
    ("mismatched tag after", ubl(f"<cbc:ID>{NUMBER}</cbc:ID><a></b>"), False),
    ("undefined entity after", ubl(f"<cbc:ID>{NUMBER}</cbc:ID><a>&foo;</a>"), False),
    ("malformed far after", ubl(f"<cbc:ID>{NUMBER}</cbc:ID>{FILLER}<a <"), False),
    ("truncated after the number", ubl(f"<cbc:ID>{NUMBER}</cbc:ID>")[:-30], False),
    ("trailing garbage", ubl(f"<cbc:ID>{NUMBER}</cbc:ID>") + b"<x/>", False),
    ("trailing text", ubl(f"<cbc:ID>{NUMBER}</cbc:ID>") + b"junk", False),
    ("malformed before the number", ubl(f"<a></b><cbc:ID>{NUMBER}</cbc:ID>"), False),
    ("unbound prefix after", ubl(f"<cbc:ID>{NUMBER}</cbc:ID><zz:Note/>"), False),
    (
        "a DOCTYPE",
        ubl(f"<cbc:ID>{NUMBER}</cbc:ID>", head=HEAD + "<!DOCTYPE Invoice>\n"),
        False,
    ),
    (
        "an internal entity",
        ubl("<cbc:ID>&n;</cbc:ID>",
            head=HEAD + f'<!DOCTYPE Invoice [<!ENTITY n "{NUMBER}">]>\n'),
        False,
    ),
    ("not XML", b'{"ID": "INV-2024-0101"}', False),
    (
        "an unknown encoding",
        ubl(f"<cbc:ID>{NUMBER}</cbc:ID>", head='<?xml version="1.0" encoding="bogus"?>\n'),
        False,
    ),
    ("empty", b"", False),
    ("a number with a NUL after", ubl(f"<cbc:ID>{NUMBER}</cbc:ID>\x00"), False),
]  # fmt: skip


@pytest.mark.parametrize(("payload", "refused"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_invoice_number_as_key_is_refused_as_the_full_parse_says(
    payload: bytes, refused: bool
) -> None:
    ctx = make_ctx(key=NUMBER)
    if refused:
        with pytest.raises(DocumentError, match="must not be the invoice number"):
            build_request(invoice(payload=payload), ctx)
    else:
        assert build_request(invoice(payload=payload), ctx) is not None


@pytest.mark.parametrize(
    ("payload", "filename"),
    [
        (ubl(f"<cbc:ID>{OTHER}</cbc:ID>"), OTHER),
        (ubl(f"<cac:X><cbc:ID>{NUMBER}</cbc:ID></cac:X><cbc:ID>{OTHER}</cbc:ID>"), OTHER),
        (ubl(f"<cbc:ID>{OTHER}</cbc:ID><a></b>"), "inv-1"),  # not XML: the document's id
        (ubl(f"<cbc:ID>{OTHER}</cbc:ID>")[:-30], "inv-1"),
        (ubl(""), "inv-1"),
    ],
)
def test_the_multipart_file_is_named_after_the_full_parse_number(
    payload: bytes, filename: str
) -> None:
    req = build_request(
        invoice(payload=payload), make_ctx(UUID, content_type="multipart/form-data")
    )
    assert req is not None
    assert f'filename="{filename}.xml"'.encode() in req.body


@pytest.mark.parametrize("payload", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_the_early_read_agrees_with_the_full_parse(payload: bytes) -> None:
    """The early read finds the number the full parse finds; where it finds one the full
    parse does not, the document is not well-formed (build_request then parses it whole)."""
    full = read_ubl(payload)
    early = _ubl.peek_document_id(payload)
    if full.id is not None:
        assert early == full.id
    elif early is not None:
        assert full.problem is not None
        assert full.problem.startswith("body is not XML")


def _character_rule(value: str) -> bool:
    """The documentId rule character by character (what is_valid_document_id checked)."""
    allowed = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-"
    return len(value) >= 6 and all(ch in allowed for ch in value)


@pytest.mark.parametrize(
    "value",
    [UUID, NUMBER, "abcdef", "abcde", "", "------", "abcdef\n", "\nabcdef", "abc def",
     "abc_def", "abcdé1", "\u0661\u0662\u0663\u0664\u0665\u0666", "ABCDEF\u212a", "abcdef\x00",
     "a" * 500, "İstanbul"],
)  # fmt: skip
def test_the_document_id_rule_in_one_match_is_the_character_rule(value: str) -> None:
    assert (_ubl.is_valid_document_id(value) is None) == _character_rule(value)
