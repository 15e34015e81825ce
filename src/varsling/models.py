"""Every table, imported in one place for Alembic and the migration test."""

from varsling.accounts.models import (
    InstallationSetting,
    LoginSession,
    Membership,
    ReporterSession,
    Unit,
    User,
    UserRole,
)
from varsling.audit import AuditCheckpoint, AuditEvent, AuditHead, ReporterAuditEvent
from varsling.cases.models import (
    Attachment,
    AttachmentChunk,
    Case,
    CaseDeclaration,
    CaseEntry,
    CaseExclusion,
    CaseKey,
    CheckIn,
    IdentityRequest,
    IdentityRequestKey,
    OverdueFlag,
    RecoveryKey,
    RecoveryWrap,
    ReporterAccess,
    ReporterLink,
)
from varsling.db import Base
from varsling.notifications.models import Notice
from varsling.reports.models import SpentSubmission
from varsling.throttle import FloodCounter, LoginBackoff, LoginThrottle

__all__ = [
    "Attachment",
    "AttachmentChunk",
    "AuditCheckpoint",
    "AuditEvent",
    "AuditHead",
    "Base",
    "Case",
    "CaseDeclaration",
    "CaseEntry",
    "CaseExclusion",
    "CaseKey",
    "CheckIn",
    "FloodCounter",
    "IdentityRequest",
    "IdentityRequestKey",
    "InstallationSetting",
    "LoginBackoff",
    "LoginSession",
    "LoginThrottle",
    "Membership",
    "Notice",
    "OverdueFlag",
    "RecoveryKey",
    "RecoveryWrap",
    "ReporterAccess",
    "ReporterAuditEvent",
    "ReporterLink",
    "ReporterSession",
    "SpentSubmission",
    "Unit",
    "User",
    "UserRole",
]
