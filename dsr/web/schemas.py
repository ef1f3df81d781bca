"""marshmallow schemas of the JSON API: they validate input and document the OpenAPI contract."""

from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from dsr.domain import delivery
from dsr.models import RequestStatus, RequestType


class _Strict(Schema):
    class Meta:
        unknown = RAISE  # an unexpected field is named in the error, never silently dropped


class _StrictBoolean(fields.Boolean):
    """JSON true/false only: "yes", 1 or "on" are refused rather than guessed at."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


PROTECTED = ("The package is a WinZip AES-256 encrypted ZIP; its password is released separately "
             "(POST /requests/<id>/package-password) and passed on through a second channel. "
             "Access and portability requests only.")


class DeliverySchema(_Strict):
    password_protected = _StrictBoolean(metadata={"description": PROTECTED + " Default: the installation's "
                                                   "DSR_PASSWORD_PROTECT_PACKAGES."})


class SubmitRequestSchema(_Strict):
    type = fields.String(required=True, validate=validate.OneOf([t.value for t in RequestType]),
                         metadata={"description": "The right exercised: Art. 15, 16, 17, 18, 20 or 21 GDPR."})
    email = fields.Email(required=True, validate=validate.Length(max=320),
                         metadata={"description": "The data subject's e-mail address, as known to the controller."})
    locale = fields.String(load_default="en", validate=validate.OneOf(["de", "en"]),
                           metadata={"description": "Language of all answers."})
    details = fields.Dict(keys=fields.String(validate=validate.Length(max=100)), load_default=dict,
                          metadata={"description": "Free-form details, e.g. what to rectify."})
    delivery = fields.Nested(DeliverySchema, load_default=dict,
                             metadata={"description": "How the package is delivered."})

    @validates_schema(skip_on_field_errors=True)
    def _a_package_to_protect(self, data: dict[str, Any], **_kwargs: Any) -> None:
        if data["delivery"].get("password_protected") and not delivery.has_package(data["type"]):
            raise ValidationError({"delivery": {"password_protected": [
                f"a {data['type']} request is not answered with a package; "
                "password protection applies to access and portability requests only"]}})


# The contract of a submission in two shapes, so that a client generated from it cannot send what the
# server refuses: password protection only where the answer is a package (OpenAPI 3.0 has no if/then).
_PACKAGED = [t.value for t in RequestType if delivery.has_package(t.value)]


class PackageSubmissionSchema(SubmitRequestSchema):
    type = fields.String(required=True, validate=validate.OneOf(_PACKAGED),
                         metadata={"description": "Access (Art. 15) or portability (Art. 20): answered with a "
                                                  "package of the subject's data."})


class NoPackageDeliverySchema(_Strict):
    password_protected = _StrictBoolean(validate=validate.Equal(False), metadata={
        "description": "Only false: the answer to this right is not a package."})


class NoPackageSubmissionSchema(SubmitRequestSchema):
    type = fields.String(required=True, validate=validate.OneOf([t.value for t in RequestType
                                                                 if t.value not in _PACKAGED]),
                         metadata={"description": "A right answered without a package (Art. 16, 17, 18, 21)."})
    delivery = fields.Nested(NoPackageDeliverySchema, load_default=dict)


SUBMISSION_BODY = {"required": True, "content": {"application/json": {"schema": {
    "oneOf": [PackageSubmissionSchema, NoPackageSubmissionSchema]}}}}


class SubmittedSchema(Schema):
    id = fields.UUID()
    reference = fields.String(metadata={"example": "DSR-2026-000042"})
    status = fields.String()
    due_at = fields.AwareDateTime(metadata={"description": "End of the legal period (exclusive), UTC."})


class VerifySchema(_Strict):
    method = fields.String(load_default="manual", validate=validate.Length(min=1, max=40),
                           metadata={"description": "How the identity was checked, e.g. 'manual', 'email-link'."})


class ApproveSchema(_Strict):
    allow_over_bound = _StrictBoolean(load_default=False, metadata={
        "description": "Approve although the preview shows a store over the erasure bound (DSR_ERASURE_BOUND); "
                       "the erasure then runs without a bound."})


class ChangeDeliverySchema(_Strict):
    password_protected = _StrictBoolean(required=True, metadata={"description": PROTECTED})


class ReleasePasswordSchema(_Strict):
    channel = fields.String(load_default="other", validate=validate.OneOf(delivery.CHANNELS),
                            metadata={"description": "How the password is passed on (recorded in the audit "
                                                     "trail); never the channel that carries the link."})


class PasswordSchema(Schema):
    artifact_id = fields.UUID(metadata={"description": "The package the password opens."})
    password = fields.String(metadata={"description": "Pass it on by phone, letter or SMS, never with the link."})
    releases = fields.Integer(metadata={"description": "How often it has been released, this time included."})
    first_released_at = fields.AwareDateTime()


class DeliveryStateSchema(Schema):
    password_protected = fields.Boolean()
    password_released = fields.Boolean(metadata={"description": "The package's password has been released."})
    password_released_at = fields.AwareDateTime(allow_none=True, metadata={"description": "First release."})
    password_releases = fields.Integer()


class CompleteTaskSchema(Schema):
    note = fields.String(required=True, validate=validate.Length(min=1, max=5000),
                         metadata={"description": "What was searched or done, and what was found."})
    # Read from the request's files, not the form (documented here so the contract names it).
    evidence = fields.List(fields.Raw(metadata={"type": "string", "format": "binary"}), load_only=True,
                           metadata={"description": "Files as evidence (scans, exports), any number; "
                                                    "they go into the package under the store's name."})


class TaskSchema(Schema):
    id = fields.UUID()
    store = fields.String(metadata={"description": "The data map's store; for action notify (an Art. 19 notice) "
                                                   "the recipient told."})
    action = fields.String(metadata={"description": "collect, erase or notify."})
    status = fields.String()
    attempts = fields.Integer()
    error = fields.String(allow_none=True)
    counts = fields.Dict()


class FindingSchema(Schema):
    kind = fields.String(metadata={"description": "past_retention: records older than the data map's retention."})
    store = fields.String()
    table = fields.String()
    category = fields.String(allow_none=True)
    retention = fields.String(allow_none=True, metadata={"description": "The data map's retention rule."})
    records = fields.Integer(allow_none=True)
    oldest = fields.String(allow_none=True)
    limit = fields.String(allow_none=True, metadata={"description": "Records from before this are past it."})
    message = fields.String()


class RetainedSchema(Schema):
    store = fields.String()
    table = fields.String()
    category = fields.String()
    rule = fields.String(metadata={"description": "The data map's retention rule that keeps the records."})
    provision = fields.String(allow_none=True, metadata={"description": "The law that keeps them, e.g. § 147 AO."})
    records = fields.Integer(metadata={"description": "How many of the subject's records (a count, never values)."})
    kept_since = fields.Date(metadata={"description": "The day of the erasure that kept them."})
    erasable_on = fields.Date(allow_none=True, metadata={
        "description": "The first day they may be erased (kept through the day before); the daily retention run "
                       "erases them then. Null: not known yet (kept for the running contract, records without a "
                       "date, a rule without a duration): a person decides."})
    status = fields.String(metadata={"description": "kept (restricted, waiting for its date); erased (by the "
                                                    "retention run or a later erasure); superseded (a later "
                                                    "erasure of the subject kept them again and holds the count)."})
    erased_at = fields.AwareDateTime(allow_none=True)


class EventSchema(Schema):
    seq = fields.Integer()
    at = fields.AwareDateTime()
    actor = fields.String()
    action = fields.String()
    data = fields.Dict()


class ListRequestsSchema(_Strict):
    status = fields.List(fields.String(validate=validate.OneOf([s.value for s in RequestStatus])), load_default=list,
                         metadata={"description": "Only these statuses (repeat the parameter for several)."})
    type = fields.List(fields.String(validate=validate.OneOf([t.value for t in RequestType])), load_default=list,
                       metadata={"description": "Only these rights (repeat the parameter for several)."})
    overdue = fields.Boolean(load_default=None, metadata={
        "description": "true: only open requests past their legal deadline; false: all others."})
    due_within_days = fields.Integer(load_default=None, validate=validate.Range(min=0, max=366), metadata={
        "description": "Only open requests whose legal deadline is within this many days (overdue ones too)."})
    q = fields.String(load_default=None, validate=validate.Length(min=1, max=320), metadata={
        "description": "A reference (DSR-2026-000042) or the requester's e-mail address, matched exactly."})
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=200))
    after = fields.String(load_default=None, validate=validate.Length(max=200), metadata={
        "description": "The 'next' cursor of the previous page."})


class _RequestFacts(Schema):
    """What every view of a request shows: who asked for what, when, and by when it is due."""

    id = fields.UUID()
    reference = fields.String()
    type = fields.String()
    status = fields.String()
    email = fields.String()
    locale = fields.String()
    channel = fields.String()
    received_at = fields.AwareDateTime()
    due_at = fields.AwareDateTime()
    legal_end = fields.Date(metadata={"description": "Last day of the legal period (Art. 12(3), holidays rolled)."})
    target_on = fields.Date(metadata={"description": "Internal target date, a buffer before the legal end."})
    completed_at = fields.AwareDateTime(allow_none=True)


class RequestSummarySchema(_RequestFacts):
    overdue = fields.Boolean(metadata={"description": "Open and past its legal deadline."})
    past_target = fields.Boolean(metadata={"description": "Open and past the internal target date (due soon)."})


class RequestPageSchema(Schema):
    items = fields.List(fields.Nested(RequestSummarySchema))
    next = fields.String(allow_none=True, metadata={
        "description": "Pass as 'after' for the next page; null on the last page."})


class RequestSchema(_RequestFacts):
    details = fields.Dict()
    verified_at = fields.AwareDateTime(allow_none=True)
    verification_method = fields.String(allow_none=True)
    datamap_version = fields.String(allow_none=True)
    delivery = fields.Nested(DeliveryStateSchema)
    tasks = fields.List(fields.Nested(TaskSchema))
    findings = fields.List(fields.Nested(FindingSchema), metadata={
        "description": "What the DPO office should know before the answer goes out (e.g. records kept past "
                       "their retention)."})
    preview = fields.Dict(allow_none=True, metadata={
        "description": "An erasure's plan before it runs, for the DPO's approval: whether the contract has "
                       "ended, the bound and the stores over it, and per store how it is erased (connector, "
                       "processor, manual) and per table its category, method (delete, null, retain), the "
                       "records found, deleted, changed and retained, why records are kept, the provision and "
                       "the retention rule whose end frees them. Once done, ``outcome`` holds what each store "
                       "did. Counts only, never the subject's data."})
    retained = fields.List(fields.Nested(RetainedSchema), metadata={
        "description": "An erasure's retention register (ER-05): what it kept under a retention duty, per store, "
                       "table and deletion date. Empty for other requests and before the erasure is checked."})
    timeline = fields.List(fields.Nested(EventSchema))


class ArtifactSchema(Schema):
    id = fields.UUID()
    kind = fields.String()
    filename = fields.String()
    media_type = fields.String()
    size = fields.Integer()
    sha256 = fields.String()
    datamap_version = fields.String(allow_none=True)
    created_at = fields.AwareDateTime()
    expires_at = fields.AwareDateTime()
    downloads = fields.Integer(metadata={"description": "Completed downloads, through any link."})
    link_downloads = fields.Integer(metadata={"description": "Completed downloads through the current link; "
                                                             "DSR_DOWNLOAD_LIMIT applies to these."})
    password_protected = fields.Boolean(metadata={"description": "AES-256 encrypted; the password comes separately."})
    password_released_at = fields.AwareDateTime(allow_none=True)
    download_url = fields.String(metadata={"description": "Signed link, valid until it expires; no token needed."})


class LinkSchema(Schema):
    artifact_id = fields.UUID()
    link = fields.Integer(metadata={"description": "The link's number; every link with a lower one is dead."})
    download_url = fields.String(metadata={"description": "The new signed link; no token needed."})
    downloads_allowed = fields.Integer(metadata={"description": "How often the new link can be downloaded."})
    expires_at = fields.AwareDateTime(metadata={"description": "When the link stops working at the latest "
                                                               "(its own validity, or the file's expiry)."})
