"""SQLAlchemy 2.x typed models, one module per aggregate; importing this registers them all."""

from dsr.models.artifact import Artifact
from dsr.models.audit import AuditEvent, AuditHead
from dsr.models.base import Base, utcnow
from dsr.models.outbox import OutboxJob
from dsr.models.request import ReferenceCounter, Request, RequestStatus, RequestType
from dsr.models.retention import RetentionEntry, RetentionStatus
from dsr.models.suppression import Suppression
from dsr.models.task import Task, TaskAction, TaskStatus
from dsr.models.user import ApiToken, Role, User

__all__ = [
    "ApiToken",
    "Artifact",
    "AuditEvent",
    "AuditHead",
    "Base",
    "OutboxJob",
    "ReferenceCounter",
    "Request",
    "RequestStatus",
    "RequestType",
    "RetentionEntry",
    "RetentionStatus",
    "Role",
    "Suppression",
    "Task",
    "TaskAction",
    "TaskStatus",
    "User",
    "utcnow",
]
