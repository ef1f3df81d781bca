"""marshmallow schemas for the data map YAML: shape and types; cross-references are checked in loader."""

from __future__ import annotations

from marshmallow import RAISE, Schema, fields, validate

IDENTITY_TYPES = ("email", "phone", "customer_id", "ip_address")
_NAME = validate.Regexp(r"^[a-z][a-z0-9_]*$", error="use lower-case letters, digits and _ (got {input})")


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class ControllerSchema(_Strict):
    name = fields.String(required=True)
    address = fields.String(load_default=None)
    email = fields.Email(load_default=None)
    dpo_email = fields.Email(load_default=None)


class IdentitySchema(_Strict):
    table = fields.String(required=True)
    column = fields.String(required=True)


class TableSchema(_Strict):
    key = fields.String(load_default="id")
    # column in this table -> "other_table.column": how rows here belong to rows there
    references = fields.Dict(keys=fields.String(), values=fields.String(), load_default=dict)
    category = fields.String(load_default=None)
    description = fields.String(load_default=None)


class ConnectionSchema(_Strict):
    url = fields.String(required=True)


class StoreSchema(_Strict):
    connector = fields.String(required=True, validate=validate.OneOf(["sql"]))
    description = fields.String(load_default=None)
    connection = fields.Nested(ConnectionSchema, required=True)
    identities = fields.Dict(
        keys=fields.String(validate=validate.OneOf(IDENTITY_TYPES)),
        values=fields.Nested(IdentitySchema),
        required=True,
        validate=validate.Length(min=1, error="a store needs at least one way to find a subject"),
    )
    tables = fields.Dict(keys=fields.String(), values=fields.Nested(TableSchema), required=True)


class DataMapSchema(_Strict):
    version = fields.String(required=True)
    date = fields.Date(required=True)
    controller = fields.Nested(ControllerSchema, required=True)
    stores = fields.Dict(keys=fields.String(validate=_NAME), values=fields.Nested(StoreSchema), required=True)
