"""The auditors' view of the trail: list events, verify both chains, sign checkpoints."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel

from varsling import audit, audit_chain, audit_listing
from varsling.authz import Auditor
from varsling.config import Settings
from varsling.request_transaction import DbSession

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


class ChainVerificationOut(BaseModel):
    chain: str
    ok: bool
    events: int
    first_bad: int | None
    reason: str


class VerificationOut(BaseModel):
    ok: bool
    events: int
    first_bad: int | None
    chain: str | None
    reason: str
    chains: list[ChainVerificationOut]


class CheckpointOut(BaseModel):
    type: str
    version: int
    seq: int
    hash: str
    reporter_seq: int
    reporter_hash: str
    signed_at: str
    signature: str
    key_fingerprint: str


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


@router.get("/verify", response_model=VerificationOut)
def verify(principal: Auditor, session: DbSession, request: Request) -> VerificationOut:
    """Both chains, and every stored checkpoint against the installation's key."""
    result = audit.verify(session, public_key=_settings(request).signing_public_key)
    audit.record(
        session,
        actor=principal.actor,
        action="audit.verified",
        # The staff count only: a timestamped event must not count reporter events.
        details={
            "ok": result.ok,
            "staff_events": result.chains[0].events,
            "chain": result.chain,
            "first_bad": result.first_bad,
        },
    )
    # The whole reporter chain is walked, but only the events of earlier days are
    # counted out loud: an auditor asking every minute must not learn when
    # today's reporter events happened.
    told = {
        c.chain: c.events
        if c.chain != audit_chain.REPORTER_CHAIN
        else audit.reporter_events_before(session, dt.datetime.now(dt.UTC).date())
        for c in result.chains
    }
    return VerificationOut(
        ok=result.ok,
        events=sum(told.values()),
        first_bad=result.first_bad,
        chain=result.chain,
        reason=result.reason,
        chains=[
            ChainVerificationOut(
                chain=c.chain,
                ok=c.ok,
                events=told[c.chain],
                first_bad=c.first_bad,
                reason=c.reason,
            )
            for c in result.chains
        ],
    )


@router.post("/checkpoints", response_model=CheckpointOut, status_code=201)
def create_checkpoint(principal: Auditor, session: DbSession, request: Request) -> CheckpointOut:
    """Sign both chains' heads; the auditor keeps the answer outside the database."""
    made = audit.create_checkpoint(session, _settings(request).signing_seed, actor=principal.actor)
    return CheckpointOut.model_validate(made.to_json())


class EventOut(BaseModel):
    chain: str
    seq: int
    day: str
    occurred: str | None
    actor: str
    action: str
    case_id: str | None
    details: dict[str, Any]
    hash: str


class EventPageOut(BaseModel):
    chain: str
    limit: int
    events: list[EventOut]
    older: int | None
    newer: int | None


@router.get("/events", response_model=EventPageOut)
def list_events(
    principal: Auditor,
    session: DbSession,
    chain: str | None = None,
    case_id: str | None = None,
    actor: str | None = None,
    action: str | None = None,
    from_day: Annotated[str | None, Query(alias="from")] = None,
    to_day: Annotated[str | None, Query(alias="to")] = None,
    limit: str | None = None,
    after: str | None = None,
    before: str | None = None,
) -> EventPageOut:
    """One chain's events, newest first, filtered; `older`/`newer` are the next cursors.

    Reporter events carry the day only, and today's are not listed (as in exports).
    """
    flt = audit_listing.EventFilter.parse(
        chain=chain,
        case_id=case_id,
        actor=actor,
        action=action,
        from_day=from_day,
        to_day=to_day,
    )
    page = audit_listing.list_events(
        session,
        flt,
        actor=principal.actor,
        limit=audit_listing.parse_limit(limit),
        after=audit_listing.parse_cursor(after, "after"),
        before=audit_listing.parse_cursor(before, "before"),
    )
    return EventPageOut(
        chain=flt.chain,
        limit=page.limit,
        events=[EventOut.model_validate(dataclasses.asdict(e)) for e in page.events],
        older=page.older,
        newer=page.newer,
    )
