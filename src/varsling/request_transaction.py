"""The one transaction per request: the session dependency of every route.

Apart from db.py so that the command line, which never serves a request,
does not import FastAPI.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker


def get_session(request: Request) -> Iterator[Session]:
    """One transaction per request, committed before the answer is sent."""
    maker: sessionmaker[Session] = request.app.state.sessionmaker
    with maker.begin() as session:
        yield session


DbSession = Annotated[Session, Depends(get_session, scope="function")]
