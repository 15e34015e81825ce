"""The auditors' view of the trail."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from varsling import audit
from varsling.authz import Auditor
from varsling.db import DbSession

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


class VerificationOut(BaseModel):
    ok: bool
    events: int
    first_bad: int | None


@router.get("/verify", response_model=VerificationOut)
def verify(principal: Auditor, session: DbSession) -> VerificationOut:
    result = audit.verify(session)
    audit.record(
        session,
        actor=principal.actor,
        action="audit.verified",
        details={"ok": result.ok, "events": result.events, "first_bad": result.first_bad},
    )
    return VerificationOut(ok=result.ok, events=result.events, first_bad=result.first_bad)
