"""Typed dependencies: the database session, the settings, the dispatcher, write access."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, status
from sqlalchemy.orm import Session

from frankensweep.core.config import Settings


def get_db(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


SessionDep = Annotated[Session, Depends(get_db)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]

#: largest row id: ids are INTEGER keys, 32-bit on PostgreSQL (a bigger one is a database error)
MAX_ID = 2**31 - 1
#: a sweep or candidate id in a path; out of range is a 422, never a query
RowId = Annotated[int, Path(ge=1, le=MAX_ID)]


def require_writer(request: Request, settings: SettingsDep) -> None:
    """With FRANKENSWEEP_API_TOKEN set, writes need ``Authorization: Bearer <token>``."""
    if settings.api_token is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    expected = settings.api_token.get_secret_value()
    if scheme.lower() != "bearer" or not secrets.compare_digest(
        token.strip().encode(), expected.encode()
    ):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "this endpoint needs the header Authorization: Bearer <FRANKENSWEEP_API_TOKEN>",
            headers={"WWW-Authenticate": "Bearer"},
        )


WriterDep = Depends(require_writer)
