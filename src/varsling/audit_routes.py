"""The auditors' view of the trail: verify both chains, sign checkpoints."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request
from pydantic import BaseModel

from varsling import audit, audit_chain
from varsling.authz import Auditor
from varsling.config import Settings
from varsling.db import DbSession

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
