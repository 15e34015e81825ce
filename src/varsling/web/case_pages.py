"""Follow-up with a case code: login, the case page, replies, files, retaliation."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)
