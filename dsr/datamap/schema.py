"""marshmallow schemas for the data map YAML: the shape and types of every part.

Cross-references (a category naming a purpose, a table naming a category) are checked in
``loader``; connector-specific settings (``connection``, identity lookups, table options) are
kept as plain mappings here and validated by each connector's own schema.
"""

from __future__ import annotations

from typing import Any

from marshmallow import INCLUDE, RAISE, Schema, ValidationError, fields, validate, validates_schema

IDENTITY_TYPES = ("email", "phone", "customer_id", "ip_address")
LOCALES = ("de", "en")
NAME = validate.Regexp(r"^[a-z][a-z0-9_]*$", error="use lower-case letters, digits and _ (got {input})")
# Art. 15(4) and secrets: how a field is disclosed in an export.
DISCLOSURES = ("export", "mask", "omit")
MASKS = ("last3", "keep_last4", "withheld", "redact", "names")
ERASURE_METHODS = ("delete", "null", "pseudonymise", "retain", "processor", "manual")
ERASURE_POLICIES = ("on_request", "after_contract", "retained_until_expiry", "not_applicable")
RECIPIENT_ROLES = ("processor", "controller", "joint_controller", "authority", "recipient")


class _Strict(Schema):
    class Meta:
        unknown = RAISE


class Localized(fields.Dict):
    """Text in German and English: ``{de: ..., en: ...}``, both required."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(keys=fields.String(validate=validate.OneOf(LOCALES)),
                         values=fields.String(validate=validate.Length(min=1)), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict[str, str]:
        result: dict[str, str] = super()._deserialize(value, attr, data, **kwargs)
        missing = [locale for locale in LOCALES if locale not in result]
        if missing:
            raise ValidationError(f"needs a text in {' and '.join(missing)} (de and en)")
        return result


def names(**kwargs: Any) -> fields.List:
    return fields.List(fields.String(validate=NAME), load_default=list, **kwargs)


class ContactSchema(_Strict):
    name = fields.String(required=True)
    address = fields.String(load_default=None)
    email = fields.Email(load_default=None)
    phone = fields.String(load_default=None)
    url = fields.Url(load_default=None)


class ControllerSchema(ContactSchema):
    dpo = fields.Nested(ContactSchema, required=True)


class AuthoritySchema(ContactSchema):
    scope = Localized(required=True)


class PurposeSchema(_Strict):
    legal_basis = fields.String(required=True, validate=validate.Length(min=3))
    description = Localized(required=True)
    legitimate_interest = Localized(load_default=None)  # Art. 13(1)(d): the interest, for 6(1)(f)


class RetentionSchema(_Strict):
    anchor = fields.String(required=True, allow_none=True)
    duration = fields.String(load_default=None, validate=validate.Regexp(
        r"^P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+S)?)?$",
        error="must be an ISO 8601 duration such as P30D or P8Y (got {input})"))
    holds = names()
    reference = fields.String(load_default=None)  # the statute, e.g. "§ 147 AO"
    description = Localized(required=True)


class NotifySchema(_Strict):
    via = fields.String(required=True, validate=validate.OneOf(["store", "email", "manual", "none"]))
    store = fields.String(load_default=None)
    email = fields.Email(load_default=None)
    reason = Localized(load_default=None)  # why none: Art. 19 "impossible or disproportionate"
    locale = fields.String(load_default=None, validate=validate.OneOf(LOCALES))  # of an e-mailed notice

    @validates_schema
    def _complete(self, data: dict[str, Any], **_: Any) -> None:
        if data["via"] == "store" and not data.get("store"):
            raise ValidationError("names no store", "store")
        if data["via"] == "email" and not data.get("email"):
            raise ValidationError("names no address", "email")
        if data["via"] == "none" and not data.get("reason"):
            raise ValidationError("notifying no one needs a reason (Art. 19)", "reason")


class RecipientSchema(_Strict):
    name = fields.String(required=True)
    role = fields.String(required=True, validate=validate.OneOf(RECIPIENT_ROLES))
    country = fields.String(required=True, validate=validate.Regexp(r"^[A-Z]{2}$", error="ISO 3166 code, e.g. DE"))
    address = fields.String(load_default=None)
    description = Localized(load_default=None)
    notify = fields.Nested(NotifySchema, required=True)


class TransferSchema(_Strict):
    recipient = fields.String(required=True, validate=NAME)
    country = fields.String(required=True, validate=validate.Regexp(r"^[A-Z]{2}$", error="ISO 3166 code, e.g. US"))
    safeguard = Localized(required=True)  # Art. 15(2): adequacy decision, SCC (Art. 46(2)(c)), ...


class CategorySchema(_Strict):
    title = Localized(required=True)
    purposes = names(validate=validate.Length(min=1, error="a category needs at least one purpose"))
    source = Localized(required=True)  # Art. 15(1)(g)
    retention = fields.String(required=True, validate=NAME)
    recipients = names()
    transfers = fields.List(fields.Nested(TransferSchema), load_default=list)
    portable = fields.Boolean(required=True)  # Art. 20
    erasure = fields.String(required=True, validate=validate.OneOf(ERASURE_POLICIES))
    statutory_retention = fields.String(load_default=None)  # the duty that keeps it, e.g. "§ 14b UStG"
    authority = fields.String(required=True, validate=NAME)  # competent supervisory authority
    automated_decisions = Localized(load_default=None)  # Art. 15(1)(h); absent means none
    # false: processing in which the controller keeps nothing (a map or captcha the browser loads from a
    # third party); no store holds it, and every access answer names it with its recipients and transfers.
    stored = fields.Boolean(load_default=True)


class WhenSchema(_Strict):
    """A condition on the record (one column) and/or on the request (an option the subject chose)."""

    column = fields.String(load_default=None)
    equals = fields.Raw(load_default=None)
    in_list = fields.String(load_default=None, validate=NAME)  # a list of the map's `lists`
    request = fields.String(load_default=None, validate=NAME)  # true in the request's details

    @validates_schema
    def _complete(self, data: dict[str, Any], **_: Any) -> None:
        if not data.get("column") and not data.get("request"):
            raise ValidationError("a condition names a column or a request option")
        if data.get("column") and (data.get("equals") is None) == (data.get("in_list") is None):
            raise ValidationError("a column condition needs exactly one of equals or in_list", "column")


class CaseSchema(_Strict):
    """For records matching ``when``, disclose this field differently (first matching case wins)."""

    when = fields.Nested(WhenSchema, required=True)
    disclose = fields.String(load_default="mask", validate=validate.OneOf(DISCLOSURES))
    mask = fields.String(load_default=None, validate=validate.OneOf(MASKS))
    reason = Localized(required=True)

    @validates_schema
    def _consistent(self, data: dict[str, Any], **_: Any) -> None:
        if data["disclose"] == "mask" and not data.get("mask"):
            raise ValidationError(f"disclose: mask needs one of {', '.join(MASKS)}", "mask")
        if data.get("mask") == "names":
            raise ValidationError("mask: names is for a field's own rule, not a case", "mask")


class FieldSchema(_Strict):
    category = fields.String(load_default=None, validate=NAME)
    disclose = fields.String(load_default="export", validate=validate.OneOf(DISCLOSURES))
    mask = fields.String(load_default=None, validate=validate.OneOf(MASKS))
    reason = Localized(load_default=None)
    label = Localized(load_default=None)  # a column's name as a subject reads it, e.g. "Two-factor sign-in"
    description = Localized(load_default=None)
    cases = fields.List(fields.Nested(CaseSchema), load_default=list)
    # mask: names. Staff named in free text (C-579/21): their names, kept in this column, are cut out.
    names_from = fields.String(load_default=None, validate=validate.Regexp(
        r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$", error="must be written table.column (got {input})"))

    @validates_schema
    def _consistent(self, data: dict[str, Any], **_: Any) -> None:
        if data["disclose"] == "mask" and not data.get("mask"):
            raise ValidationError(f"disclose: mask needs one of {', '.join(MASKS)}", "mask")
        if data["disclose"] != "mask" and data.get("mask"):
            raise ValidationError("mask is only for disclose: mask", "mask")
        if (data.get("mask") == "names") != bool(data.get("names_from")):
            raise ValidationError("mask: names needs names_from (the table.column that holds the names), "
                                  "and names_from is only for mask: names", "names_from")
        if data.get("mask") == "names" and data["cases"]:
            raise ValidationError("a field with mask: names cannot have cases", "cases")
        if data["disclose"] in ("mask", "omit") and not data.get("reason"):
            raise ValidationError("a masked or omitted field needs a reason (it is explained in the report)",
                                  "reason")


class ErasureSchema(_Strict):
    method = fields.String(required=True, validate=validate.OneOf(ERASURE_METHODS))
    fields_ = fields.List(fields.String(), data_key="fields", load_default=list)
    reason = Localized(load_default=None)
    until = fields.String(load_default=None, validate=NAME)  # retention rule that ends the retention
    # column -> the value written instead of NULL (a NOT NULL column of a store kept as it is)
    replacements = fields.Dict(keys=fields.String(), values=fields.Raw(allow_none=True), load_default=dict)
    # method retain: the column holding the date the rule's anchor counts from (the retention register's
    # deletion date per record); the loader checks it is one of the table's fields.
    dated_by = fields.String(load_default=None, validate=validate.Length(min=1))

    @validates_schema
    def _consistent(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("dated_by") and data["method"] != "retain":
            raise ValidationError("dated_by is for method retain: it dates the records kept until the rule in "
                                  "until ends", "dated_by")
        if data["method"] in ("null", "pseudonymise") and not data["fields_"]:
            raise ValidationError(f"method {data['method']} needs the fields it changes", "fields")
        if data["replacements"] and data["method"] != "null":
            raise ValidationError("replacements are for method null", "replacements")
        if stray := sorted(set(data["replacements"]) - set(data["fields_"])):
            raise ValidationError(f"not among the fields changed: {', '.join(stray)}", "replacements")
        if data["method"] == "retain" and not (data.get("reason") and data.get("until")):
            raise ValidationError("retain needs a reason and the retention rule it lasts until (until)", "reason")


class TableSchema(Schema):
    """A set of records in a store (a SQL table, a log, a folder of files); connector options pass through."""

    class Meta:
        unknown = INCLUDE

    category = fields.String(load_default=None, validate=NAME)
    label = Localized(load_default=None)  # the table's name as a subject reads it
    description = Localized(load_default=None)
    # The column that holds when each record was collected: records older than a retention rule
    # anchored at collection allows are reported to the DPO office (dsr.exports.aging).
    collected_at = fields.String(load_default=None)
    fields_ = fields.Dict(keys=fields.String(), values=fields.Nested(FieldSchema), data_key="fields",
                          load_default=dict)
    erasure = fields.Nested(ErasureSchema, load_default=None)


class StoreSchema(_Strict):
    connector = fields.String(required=True)
    label = Localized(load_default=None)  # the system's name as a subject reads it
    description = Localized(required=True)
    category = fields.String(load_default=None, validate=NAME)
    connection = fields.Dict(required=True)
    identities = fields.Dict(keys=fields.String(validate=validate.OneOf(IDENTITY_TYPES)), values=fields.Dict(),
                             load_default=dict)
    tables = fields.Dict(keys=fields.String(), values=fields.Nested(TableSchema), required=True,
                         validate=validate.Length(min=1, error="a store needs at least one table"))
    recipient = fields.String(load_default=None, validate=NAME)  # a processor's store: who holds it
    deadline_days = fields.Integer(load_default=None, validate=validate.Range(min=1))  # LC-60


class ListSchema(_Strict):
    description = Localized(required=True)
    values = fields.List(fields.String(), required=True)


class ContractSchema(_Strict):
    store = fields.String(required=True, validate=NAME)
    table = fields.String(required=True)
    column = fields.String(required=True)
    ended = fields.List(fields.String(), required=True, validate=validate.Length(min=1))


class DataMapSchema(_Strict):
    version = fields.String(required=True)
    date = fields.Date(required=True)
    notice = fields.Dict(load_default=dict)
    controller = fields.Nested(ControllerSchema, required=True)
    authorities = fields.Dict(keys=fields.String(validate=NAME), values=fields.Nested(AuthoritySchema),
                              required=True)
    purposes = fields.Dict(keys=fields.String(validate=NAME), values=fields.Nested(PurposeSchema), required=True)
    retention = fields.Dict(keys=fields.String(validate=NAME), values=fields.Nested(RetentionSchema),
                            required=True)
    recipients = fields.Dict(keys=fields.String(validate=NAME), values=fields.Nested(RecipientSchema),
                             load_default=dict)
    categories = fields.Dict(keys=fields.String(validate=NAME), values=fields.Nested(CategorySchema),
                             required=True)
    stores = fields.Dict(keys=fields.String(validate=NAME), values=fields.Nested(StoreSchema), required=True)
    # Named value lists that field cases refer to (e.g. counselling lines whose numbers are never shown).
    lists = fields.Dict(keys=fields.String(validate=NAME), values=fields.Nested(ListSchema), load_default=dict)
    # Where the subject's contract status is kept (erasure of after_contract data); absent: always running.
    contract = fields.Nested(ContractSchema, load_default=None)
