"""Reporter-side bookkeeping that is not case content."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Date, LargeBinary
from sqlalchemy.orm import Mapped, mapped_column

from varsling.db import Base


class SpentSubmission(Base):
    """A report form that has been sent, so that a reload cannot send it twice.

    Only a keyed hash of the form's random submission id is kept, with the
    day; nothing in the clear links it to the case it made.
    """

    __tablename__ = "spent_submissions"

    digest: Mapped[bytes] = mapped_column(LargeBinary, primary_key=True)
    spent_on: Mapped[dt.date] = mapped_column(Date, index=True)
    # The receipt shown again to the browser that sent the form (a double
    # click): the case code and its exact expiry, sealed under a key derived
    # from the submission id and that browser's cookie, neither of them stored.
    # Cleared a day or two later, with the row.
    sealed_receipt: Mapped[bytes | None] = mapped_column(LargeBinary)
