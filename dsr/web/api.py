"""The JSON API (v1): intake is public; everything about a case needs a DPO token."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

from flask import Response, current_app, stream_with_context
from flask.views import MethodView
from flask_smorest import abort
from marshmallow import RAISE

from dsr.domain import audit, delivery, erasing, fulfilment, intake, listing, planning, retention_register
from dsr.domain.errors import DomainError, InvalidTransition, NotFound
from dsr.domain.findings import findings
from dsr.exports.protected_zip import PasswordUnreadable
from dsr.exports.sealed import SealBroken, unseal
from dsr.models import Artifact, RequestType, Role, Task, utcnow
from dsr.web.auth import authenticated, needs_token, principal, refuse_unauthenticated, require_token
from dsr.web.context import runtime
from dsr.web.downloads import LinkSigner
from dsr.web.json_body import JSONBlueprint
from dsr.web.links import public_url
from dsr.web.schemas import (
    SUBMISSION_BODY,
    ApproveSchema,
    ArtifactSchema,
    ChangeDeliverySchema,
    CompleteTaskSchema,
    DeliveryStateSchema,
    LinkSchema,
    ListRequestsSchema,
    PasswordSchema,
    ReleasePasswordSchema,
    RequestPageSchema,
    RequestSchema,
    SubmitRequestSchema,
    SubmittedSchema,
    TaskSchema,
    VerifySchema,
)

blp = JSONBlueprint("api", __name__, url_prefix="/api/v1", description="Data-subject requests")
BEARER: list[dict[str, list[str]]] = [{"bearerAuth": []}]
UNAUTHORIZED = "Missing or invalid token"
NO_REQUEST = "No such request"
JSON_TYPES = ("application/json",)
SUBMIT_REQUEST = SubmitRequestSchema()  # one instance: webargs would build one per request from the class


MULTIPART_ENDPOINTS = ("api.CompleteTask",)  # these take files as evidence


EVIDENCE_LIMIT = 64 * 1024 * 1024  # scans of a paper archive; every other body stays under 1 MiB


@blp.before_request
def _evidence_may_be_larger() -> None:
    from flask import request as http

    if http.endpoint in MULTIPART_ENDPOINTS:
        http.max_content_length = EVIDENCE_LIMIT


@blp.before_request
def _json_only() -> None:
    """A body that is not JSON is refused as such, instead of reading as 'every field missing'."""
    from flask import request as http

    if http.method in ("POST", "PUT", "PATCH") and http.content_length and not http.is_json:
        multipart = http.endpoint in MULTIPART_ENDPOINTS
        if multipart and http.mimetype == "multipart/form-data":
            return
        view = current_app.view_functions.get(http.endpoint or "")
        if needs_token(view, http.method) and authenticated() is None:
            refuse_unauthenticated()  # who is asking comes before what was sent: 401, not 415
        abort(415, message="send the body as multipart/form-data" if multipart else
              "send the body as JSON with Content-Type: application/json")


def _signer() -> LinkSigner:
    return LinkSigner(current_app.config["SECRET_KEY"], runtime().settings.download_link_ttl_seconds)


@blp.route("/requests")
class Requests(MethodView):
    @blp.doc(security=BEARER)
    @require_token
    @blp.arguments(ListRequestsSchema, location="query", as_kwargs=True, unknown=RAISE)
    @blp.response(200, RequestPageSchema)
    @blp.alt_response(401, description=UNAUTHORIZED)
    def get(self, **wanted: Any) -> dict[str, Any]:
        """The requests, earliest legal deadline first, a page at a time (keyset pages: follow ``next``)."""
        now = utcnow()
        rt = runtime()
        with rt.sessions() as session:
            try:
                found = listing.page(session, listing.RequestFilter(
                    statuses=wanted["status"], types=wanted["type"], overdue=wanted["overdue"],
                    due_within_days=wanted["due_within_days"], query=wanted["q"]),
                    now=now, limit=wanted["limit"], after=wanted["after"])
            except listing.BadCursor as exc:
                abort(422, message=str(exc), errors={"query": {"after": [str(exc)]}})
            today = now.astimezone(ZoneInfo(rt.settings.timezone)).date()
            items = [{**_as_dict(r), "overdue": r.status not in listing.CLOSED and r.due_at <= now,
                      "past_target": r.status not in listing.CLOSED and r.target_on < today} for r in found.items]
            return {"items": items, "next": found.next}

    @blp.arguments(SUBMIT_REQUEST)
    @blp.doc(requestBody=SUBMISSION_BODY)  # the same rules, in the two shapes a client may send
    @blp.response(202, SubmittedSchema)
    @blp.alt_response(422, description="Invalid input: each bad field is named under errors.json")
    def post(self, data: dict[str, Any]) -> dict[str, Any]:
        """Submit a request (Art. 15-21 GDPR). The legal period starts now."""
        rt = runtime()
        protected = delivery.choose(data["type"], data["delivery"].get("password_protected"),
                                    rt.settings.password_protect_packages)
        submission = intake.Submission(RequestType(data["type"]), data["email"], data["locale"], data["details"],
                                       password_protected=protected)
        request = intake.receive(rt.sessions, submission, received_at=utcnow(), policy=rt.deadlines,
                                 datamap_version=rt.datamap.version)
        return {"id": request.id, "reference": request.reference, "status": request.status,
                "due_at": request.due_at}


@blp.route("/requests/<uuid:request_id>")
class RequestDetail(MethodView):
    @blp.doc(security=BEARER)
    @require_token
    @blp.response(200, RequestSchema)
    @blp.alt_response(401, description=UNAUTHORIZED)
    @blp.alt_response(404, description=NO_REQUEST)
    def get(self, request_id: uuid.UUID) -> dict[str, Any]:
        """A request with its status, tasks and timeline (audit events); an erasure's retention register entries."""
        with runtime().sessions() as session:
            request = _get(session, request_id)
            return {**_as_dict(request), "preview": _public(request.preview),
                    "tasks": list(request.tasks), "findings": findings(request.tasks),
                    "retained": retention_register.entries_for(session, request.id),
                    "delivery": delivery.describe(session, request),
                    "timeline": audit.events_for(session, request.id)}


@blp.route("/requests/<uuid:request_id>/verify")
class Verify(MethodView):
    @blp.doc(security=BEARER)
    @require_token  # before the body is parsed: without a token, 401 whatever the body says
    @blp.arguments(VerifySchema, required=False)
    @blp.response(200, SubmittedSchema)
    @blp.alt_response(401, description=UNAUTHORIZED)
    @blp.alt_response(404, description=NO_REQUEST)
    @blp.alt_response(409, description="The request is not waiting for verification")
    def post(self, data: dict[str, Any] | None, request_id: uuid.UUID) -> dict[str, Any]:
        """Mark the requester's identity as verified by hand; the work starts."""
        method = (data or {}).get("method", "manual")
        with runtime().sessions.begin() as session:
            request = _get(session, request_id, for_update=True)
            try:
                intake.verify(session, request, actor=principal().actor, method=method, now=utcnow())
            except InvalidTransition as exc:
                abort(409, message=str(exc))
            return {"id": request.id, "reference": request.reference, "status": request.status,
                    "due_at": request.due_at}


@blp.route("/requests/<uuid:request_id>/approve")
class Approve(MethodView):
    @blp.doc(security=BEARER)
    @require_token
    @blp.arguments(ApproveSchema, required=False)
    @blp.response(202, SubmittedSchema)
    @blp.alt_response(401, description=UNAUTHORIZED)
    @blp.alt_response(403, description="Only a DPO token may approve")
    @blp.alt_response(404, description=NO_REQUEST)
    @blp.alt_response(409, description="The request is not a previewed erasure waiting for approval, or the "
                                       "preview shows a store over the bound and allow_over_bound was not given")
    def post(self, data: dict[str, Any] | None, request_id: uuid.UUID) -> dict[str, Any]:
        """Approve an erasure's preview (``GET /requests/<id>`` shows it): only now does anything change."""
        if principal().role != Role.DPO:
            _abort(403, "only the data protection officer may approve an erasure")
        with runtime().sessions.begin() as session:
            request = _get(session, request_id, for_update=True)
            try:
                erasing.approve(session, request, runtime().datamap, actor=principal().actor, now=utcnow(),
                                allow_over_bound=bool((data or {}).get("allow_over_bound")))
            except (InvalidTransition, erasing.OverBound) as exc:
                _abort(409, str(exc))
            return {"id": request.id, "reference": request.reference, "status": request.status,
                    "due_at": request.due_at}


@blp.route("/requests/<uuid:request_id>/artifacts")
class Artifacts(MethodView):
    @blp.doc(security=BEARER)
    @require_token
    @blp.response(200, ArtifactSchema(many=True))
    @blp.alt_response(401, description=UNAUTHORIZED)
    @blp.alt_response(404, description=NO_REQUEST)
    def get(self, request_id: uuid.UUID) -> list[dict[str, Any]]:
        """The files produced for a request, each with its checksum and a signed download link."""
        signer = _signer()
        with runtime().sessions() as session:
            request = _get(session, request_id)
            return [
                {**_as_dict(a), "password_sealed": None, "password_protected": a.password_protected,
                 "download_url": _download_url(signer, a)}
                for a in request.artifacts if a.purged_at is None
            ]


@blp.route("/requests/<uuid:request_id>/delivery")
class Delivery(MethodView):
    @blp.doc(security=BEARER)
    @require_token
    @blp.arguments(ChangeDeliverySchema)
    @blp.response(200, DeliveryStateSchema)
    @blp.alt_response(401, description=UNAUTHORIZED)
    @blp.alt_response(404, description=NO_REQUEST)
    @blp.alt_response(409, description="The package is built already")
    @blp.alt_response(422, description="Invalid input, or a request type that is not answered with a package")
    def put(self, data: dict[str, Any], request_id: uuid.UUID) -> dict[str, Any]:
        """Switch password protection of the package on or off before it is built (audited)."""
        with runtime().sessions.begin() as session:
            request = _get(session, request_id, for_update=True)
            try:
                delivery.set_password_protection(session, request, data["password_protected"],
                                                 actor=principal().actor, now=utcnow())
            except InvalidTransition as exc:
                _abort(409, str(exc))
            except DomainError as exc:
                abort(422, message=str(exc), errors={"json": {"password_protected": [str(exc)]}})
            return delivery.describe(session, request)


@blp.route("/requests/<uuid:request_id>/package-password")
class PackagePassword(MethodView):
    @blp.doc(security=BEARER)
    @require_token
    @blp.arguments(ReleasePasswordSchema, required=False)
    @blp.response(200, PasswordSchema, headers={"Cache-Control": {"schema": {"type": "string"}}})
    @blp.alt_response(401, description=UNAUTHORIZED)
    @blp.alt_response(404, description=NO_REQUEST)
    @blp.alt_response(409, description="The request has no password-protected package")
    @blp.alt_response(410, description="The package has expired; its password opens nothing")
    @blp.alt_response(500, description="The sealed password cannot be read (DSR_SECRET_KEY changed)")
    def post(self, data: dict[str, Any] | None, request_id: uuid.UUID) -> tuple[Any, int, dict[str, str]]:
        """Release the package's password, to pass on through a second channel (phone, letter, SMS).

        Every release is an audit event naming who released it and the channel; the password is
        never in the download link, the audit trail or the logs."""
        rt = runtime()
        channel = (data or {}).get("channel", "other")
        with rt.sessions.begin() as session:
            request = _get(session, request_id, for_update=True)
            try:
                release = delivery.release_password(session, request, actor=principal().actor, channel=channel,
                                                    now=utcnow(), seal_key=rt.seal_key)
            except delivery.PackageGone as exc:
                _abort(410, str(exc))
            except delivery.NoPassword as exc:
                _abort(409, str(exc))
            except PasswordUnreadable as exc:
                current_app.logger.error("request %s: %s", request_id, exc)
                _abort(500, "the password cannot be read; the data protection office has been told")
        return release, 200, {"Cache-Control": "no-store"}  # no copy in a browser or proxy cache


@blp.route("/requests/<uuid:request_id>/tasks/<uuid:task_id>/rerun")
class Rerun(MethodView):
    @blp.doc(security=BEARER)
    @require_token
    @blp.response(202, TaskSchema)
    @blp.alt_response(401, description=UNAUTHORIZED)
    @blp.alt_response(404, description="No such request or task")
    @blp.alt_response(409, description="The task has not failed")
    def post(self, request_id: uuid.UUID, task_id: uuid.UUID) -> Task:
        """Run one store's failed task again (after the store was mended); the package is then rebuilt."""
        with runtime().sessions.begin() as session:
            request, task = _task(session, request_id, task_id)
            try:
                planning.rerun(session, request, task, actor=principal().actor, now=utcnow())
            except InvalidTransition as exc:
                _abort(409, str(exc))
            return task


@blp.route("/requests/<uuid:request_id>/tasks/<uuid:task_id>/complete")
class CompleteTask(MethodView):
    @blp.doc(security=BEARER)
    @require_token
    @blp.arguments(CompleteTaskSchema, location="form", content_type="multipart/form-data")
    @blp.response(200, TaskSchema)
    @blp.alt_response(401, description=UNAUTHORIZED)
    @blp.alt_response(404, description="No such request or task")
    @blp.alt_response(409, description="The task is not waiting for a person")
    def post(self, data: dict[str, Any], request_id: uuid.UUID, task_id: uuid.UUID) -> Task:
        """Complete a store's task by hand (multipart form: ``note``, and files as ``evidence``)."""
        from flask import request as http

        rt = runtime()
        with rt.sessions.begin() as session:
            _request, task = _task(session, request_id, task_id)
            evidence = [(f.filename or "evidence", f.stream) for f in http.files.getlist("evidence")]
            try:
                fulfilment.complete_by_hand(session, task, rt.storage, actor=principal().actor, note=data["note"],
                                            evidence=evidence, now=utcnow())
            except InvalidTransition as exc:
                _abort(409, str(exc))
            except DomainError as exc:
                _abort(422, str(exc))
            return task


@blp.route("/artifacts/<uuid:artifact_id>/links")
class Links(MethodView):
    @blp.doc(security=BEARER)
    @require_token
    @blp.response(201, LinkSchema)
    @blp.alt_response(401, description=UNAUTHORIZED)
    @blp.alt_response(404, description="No such file")
    @blp.alt_response(410, description="The file has expired and was removed")
    def post(self, artifact_id: uuid.UUID) -> dict[str, Any]:
        """Issue a new download link, after the old one expired or was used as often as allowed (audited).

        The new link can be downloaded DSR_DOWNLOAD_LIMIT times again; every older link is dead from now on."""
        rt, signer, now = runtime(), _signer(), utcnow()
        with rt.sessions.begin() as session:
            try:
                artifact = delivery.issue_link(session, artifact_id, actor=principal().actor, now=now)
            except NotFound as exc:
                _abort(404, str(exc))
            except delivery.PackageGone as exc:
                _abort(410, str(exc))
            return {"artifact_id": artifact.id, "link": artifact.link, "download_url": _download_url(signer, artifact),
                    "downloads_allowed": rt.settings.download_limit,
                    "expires_at": min(artifact.expires_at, now + timedelta(seconds=signer.max_age))}


@blp.route("/artifacts/<uuid:artifact_id>/download")
@blp.doc(parameters=[{"in": "query", "name": "sig", "required": True, "schema": {"type": "string"}}])
@blp.alt_response(403, description="The link is forged or altered")
@blp.alt_response(410, description="The link has expired, was replaced by a newer one or used as often as allowed, "
                                   "or the file has expired; the message says which")
def download(artifact_id: uuid.UUID) -> Response:
    """Download an artifact through its signed link. Only a download sent completely counts (HEAD never)
    and is an audit event."""
    from flask import request as http

    link = _signer().read(http.args.get("sig", ""))
    if link is None or link.artifact_id != artifact_id:
        _abort(403, "this download link is not valid")
    rt = runtime()
    with rt.sessions() as session:
        try:
            artifact = delivery.open_download(session, artifact_id, link.number, link_expired=link.expired,
                                              limit=rt.settings.download_limit, now=utcnow())
        except NotFound as exc:
            _abort(404, str(exc))
        except delivery.LinkRefused as exc:
            _abort(410, str(exc))
        path, name, media_type, size = rt.storage.root / artifact.path, artifact.filename, artifact.media_type, \
            artifact.size
    chunks = unseal(path, rt.seal_key)
    try:
        first = next(chunks)  # verified before anything is sent: a broken file gets an error, not bytes
    except (SealBroken, FileNotFoundError) as exc:
        current_app.logger.error("artifact %s cannot be read: %s", artifact_id, exc)
        _abort(500, "this file cannot be read; the data protection office has been told")
    counts = http.method == "GET"  # a HEAD sends no file; werkzeug never runs body() for it either

    def body() -> Iterator[bytes]:
        yield first
        yield from chunks
        # Reached only when the last byte was handed on: a download broken off is not counted.
        if counts:
            with rt.sessions.begin() as session:
                delivery.record_download(session, artifact_id, link.number, now=utcnow())

    return Response(stream_with_context(body()), mimetype=media_type, headers={
        "Content-Disposition": f'attachment; filename="{name}"', "Content-Length": str(size),
        "Cache-Control": "no-store"})


def _download_url(signer: LinkSigner, artifact: Artifact) -> str:
    return public_url("api.download", artifact_id=artifact.id, sig=signer.sign(artifact.id, artifact.link))


def _abort(status: int, message: str) -> NoReturn:
    abort(status, message=message)
    raise AssertionError("unreachable")  # flask_smorest.abort always raises


def _task(session: Any, request_id: uuid.UUID, task_id: uuid.UUID) -> tuple[Any, Task]:
    """The request and one of its tasks, both locked for the change; 404 when either is missing."""
    request = _get(session, request_id, for_update=True)
    task = session.get(Task, task_id, with_for_update=True)
    if task is None or task.request_id != request.id:
        _abort(404, f"request {request.reference} has no task {task_id}")
    return request, task


def _get(session: Any, request_id: uuid.UUID, *, for_update: bool = False) -> Any:
    try:
        return intake.get(session, request_id, for_update=for_update)
    except NotFound:
        abort(404, message=f"no request with id {request_id}")


def _public(preview: dict[str, Any] | None) -> dict[str, Any] | None:
    """The preview without the subject's resolved identities (customer number, phone)."""
    return None if preview is None else {k: v for k, v in preview.items() if k != "subject"}


def _as_dict(row: Any) -> dict[str, Any]:
    return {c.key: getattr(row, c.key) for c in row.__table__.columns}
