"""The notification outbox: who is to be told that a case in which unit needs them."""

from __future__ import annotations

import datetime as dt
import enum

from sqlalchemy import Date, DateTime, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from varsling.db import Base


class NoticeKind(enum.StrEnum):
    NEW_CASE = "new_case"
    OVERDUE = "overdue"
    IDENTITY_REQUEST = "identity_request"
    RETALIATION = "retaliation"


class Notice(Base):
    """One staff member to be told, by mail, that a case in a unit needs them.

    Nothing of the case: no case id, no content, only the recipient, the kind
    and the unit, with the day it was written. The id is random so the rows'
    order does not tell a reporter's notices from staff ones written around them.
    A row goes when its mail is sent (or given up on); the audit trail keeps counts.
    """

    __tablename__ = "notification_outbox"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    # A staff account: reporters have no account, so no notice can ever reach one.
    recipient_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    unit_id: Mapped[int] = mapped_column(ForeignKey("units.id"))
    created_on: Mapped[dt.date] = mapped_column(Date)
    # Failed deliveries so far, and when the next may be tried.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    # A job run that is sending this row: its random claim, and until when it holds it.
    claim: Mapped[str | None] = mapped_column(String(32), index=True)
    claimed_until: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
