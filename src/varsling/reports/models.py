"""The installation-wide counter that slows case-code guessing."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from varsling.db import Base


class LoginThrottle(Base):
    """Failed case-code logins in the current minute, counted for everyone at once."""

    __tablename__ = "login_throttle"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    window_start: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    failures: Mapped[int] = mapped_column(Integer)
