"""Layer-1 validation of the AQI sandbox: a small JSON-schema subset per request type.

Only the rules the public API reference states (required fields, maximum lengths, formats,
enums) for the fields docrelay's samples and tests use; it is not the full AQI schema. Errors
read like AQI's (seed 004): ``Path:<field> Message: <what> ... SchemaId: #/components/...``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["SCHEMAS", "SchemaError", "validate"]


@attrs.frozen
class Field:
    required: bool = False
    type: str = "string"  # string | number | object | array | id (string or integer)
    max_length: int | None = None
    pattern: str | None = None
    enum: tuple[str, ...] = ()
    fields: Mapping[str, Field] | None = None  # object properties, or array item properties
    min_items: int = 0


@attrs.frozen
class SchemaError:
    path: str
    message: str
    schema_id: str


_DATE = r"^\d{4}-\d{2}-\d{2}"  # yyyy-MM-dd (a time part after it is tolerated)
_COUNTRY = r"^[A-Z]{2}$"
_CURRENCY = r"^[A-Z]{3}$"
_EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"

ADDRESS: dict[str, Field] = {
    "countryCode": Field(required=True, pattern=_COUNTRY),
    "firstName": Field(max_length=50),
    "lastName": Field(required=True, max_length=50),
    "language": Field(pattern=r"^[A-Za-z]{2}$"),
    "postalCode": Field(required=True, max_length=10),
    "postalPlace": Field(required=True, max_length=50),
    "salutation": Field(max_length=10),
    "street": Field(required=True, max_length=100),
    "streetNumber": Field(max_length=10),
    "email": Field(pattern=_EMAIL, max_length=100),
}

ORDER_ITEM: dict[str, Field] = {
    "orderItemReference": Field(required=True, type="id"),
    "productId": Field(max_length=50),
    "description": Field(required=True, max_length=50),
    "quantity": Field(required=True, type="number"),
    "grossUnitPrice": Field(required=True, type="number"),
    "vatAmount": Field(type="number"),
    "vatPercent": Field(type="number"),
    "positionType": Field(max_length=30),
}

ITEM_REF: dict[str, Field] = {
    "orderItemReference": Field(required=True, type="id"),
    "quantity": Field(type="number"),
}

SCHEMAS: dict[str, tuple[str, dict[str, Field]]] = {
    "order": (
        "Order",
        {
            "orderReference": Field(required=True, max_length=16, pattern=r"^[A-Za-z0-9]+$"),
            "orderDate": Field(required=True, pattern=_DATE),
            "currency": Field(required=True, pattern=_CURRENCY),
            "orderChannel": Field(
                required=True, enum=("ECOM", "MOTO", "MOBILE", "POS", "APP", "P2P")
            ),
            "orderType": Field(
                required=True, enum=("PHYSICAL_GOODS", "DIGITAL_GOODS", "BANK_VERIFICATION")
            ),
            "supplyingCountry": Field(required=True, pattern=_COUNTRY),
            "vatDeclarationCountry": Field(pattern=_COUNTRY),
            "processAfterDunning": Field(
                enum=("HAND_OVER_FOR_DEBT_COLLECTION", "HAND_OVER_FOR_FACTORING")
            ),
            "carrier": Field(max_length=32),
            "billToAddress": Field(required=True, type="object", fields=ADDRESS),
            "shipToAddress": Field(type="object", fields=ADDRESS),
            "items": Field(required=True, type="array", fields=ORDER_ITEM, min_items=1),
        },
    ),
    "invoice": (
        "Invoice",
        {
            "invoiceReference": Field(required=True, max_length=30),
            "invoiceDate": Field(required=True, pattern=_DATE),
            "dueDate": Field(required=True, pattern=_DATE),
            "dispatchDate": Field(pattern=_DATE),
            "shipmentReference": Field(max_length=30),
            "carrier": Field(max_length=32),
            "trackingCode": Field(max_length=50),
            "items": Field(type="array", fields=ITEM_REF),
        },
    ),
    "cancellation": (
        "Cancellation",
        {
            "cancellationReference": Field(max_length=30),
            "cancellationDate": Field(required=True, pattern=_DATE),
            "items": Field(required=True, type="array", fields=ITEM_REF, min_items=1),
        },
    ),
    "goodwill": (
        "Goodwill",
        {
            "goodwillReference": Field(required=True, max_length=30),
            "goodwillDate": Field(required=True, pattern=_DATE),
            "grossAmount": Field(required=True, type="number"),
            "currency": Field(required=True, pattern=_CURRENCY),
            "reason": Field(max_length=100),
        },
    ),
    "return": (
        "Return",
        {
            "returnReference": Field(required=True, max_length=30),
            "returnDate": Field(required=True, pattern=_DATE),
            "returnReason": Field(required=True, enum=("CARRIER_RETURN", "CUSTOMER_RETURN")),
            "invoiceReference": Field(max_length=30),
            "items": Field(required=True, type="array", fields=ITEM_REF, min_items=1),
        },
    ),
    "payment": (
        "Payment",
        {
            "paymentReference": Field(required=True, max_length=30),
            "paymentDate": Field(pattern=_DATE),
            "authorizedAmount": Field(required=True, type="number"),
            "currency": Field(pattern=_CURRENCY),
            "paymentProvider": Field(required=True, max_length=50),
        },
    ),
}


def _type_name(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "Boolean"
    if isinstance(value, int):
        return "Integer"
    if isinstance(value, float):
        return "Number"
    if isinstance(value, str):
        return "String"
    if isinstance(value, list):
        return "Array"
    return "Object"


def _check(value: Any, spec: Field, path: str, schema_id: str, out: list[SchemaError]) -> None:
    def err(message: str) -> None:
        out.append(SchemaError(path=path, message=message, schema_id=schema_id))

    if spec.type == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            err(f"Invalid type. Expected Number but got {_type_name(value)}.")
        return
    if spec.type == "id":
        if isinstance(value, bool) or not isinstance(value, int | str) or value == "":
            err(f"Invalid type. Expected String, Integer but got {_type_name(value)}.")
        return
    if spec.type == "object":
        if not isinstance(value, dict):
            err(f"Invalid type. Expected Object but got {_type_name(value)}.")
            return
        _object(value, spec.fields or {}, path + ".", schema_id, out)
        return
    if spec.type == "array":
        if not isinstance(value, list):
            err(f"Invalid type. Expected Array but got {_type_name(value)}.")
            return
        if len(value) < spec.min_items:
            err(f"Array item count {len(value)} is less than minimum count of {spec.min_items}.")
            return
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                out.append(
                    SchemaError(
                        f"{path}[{i}]",
                        f"Invalid type. Expected Object but got {_type_name(item)}.",
                        schema_id,
                    )
                )
                continue
            _object(item, spec.fields or {}, f"{path}[{i}].", schema_id, out)
        return
    if not isinstance(value, str):
        err(f"Invalid type. Expected String but got {_type_name(value)}.")
        return
    if spec.max_length is not None and len(value) > spec.max_length:
        err(f"String '{value}' exceeds maximum length of {spec.max_length}.")
    elif spec.pattern is not None and not re.search(spec.pattern, value):
        err(f"String '{value}' does not match regex pattern '{spec.pattern}'.")
    elif spec.enum and value not in spec.enum:
        err(f'Value "{value}" is not defined in enum.')


def _object(
    data: Mapping[str, Any],
    fields: Mapping[str, Field],
    prefix: str,
    schema_id: str,
    out: list[SchemaError],
) -> None:
    missing = [name for name, spec in fields.items() if spec.required and data.get(name) is None]
    if missing:
        out.append(
            SchemaError(
                path=prefix.rstrip(".") or "#",
                message="Required properties are missing from object: " + ", ".join(missing) + ".",
                schema_id=schema_id,
            )
        )
    for name, spec in fields.items():
        if name in data and data[name] is not None:
            _check(data[name], spec, prefix + name, f"{schema_id}/properties/{name}", out)


def validate(kind: str, body: Any) -> list[SchemaError]:
    """Layer-1 errors of *body* for request type *kind* (empty when it passes)."""
    name, fields = SCHEMAS[kind]
    schema_id = f"#/components/schemas/{name}"
    if not isinstance(body, dict):
        return [
            SchemaError(
                "#", f"Invalid type. Expected Object but got {_type_name(body)}.", schema_id
            )
        ]
    out: list[SchemaError] = []
    _object(body, fields, "", schema_id, out)
    return out
