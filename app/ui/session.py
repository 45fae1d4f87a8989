"""Sign-in and CSRF protection of the staff pages.

A visitor's state lives in one signed cookie (itsdangerous): the client name of the API key used to sign in (none
before sign-in, and none needed in open-access mode), the reviewer's name and a CSRF token that every form sends
back. The cookie is HttpOnly, SameSite=Strict, Secure over HTTPS, and expires; the key itself is never stored.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import Request, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from app.config import Settings

logger = logging.getLogger(__name__)

SESSION_COOKIE = "kommunrouter_staff"
CSRF_FIELD = "csrf_token"
_SALT = "kommunrouter.staff-pages.session"


@dataclass(frozen=True)
class StaffSession:
    """Who is signed in (``client`` None: nobody yet) and the CSRF token of their forms."""

    csrf_token: str
    client: str | None = None
    reviewer: str | None = None

    @classmethod
    def anonymous(cls) -> StaffSession:
        return cls(csrf_token=secrets.token_urlsafe(32))

    @classmethod
    def signed_in(cls, *, client: str, reviewer: str | None) -> StaffSession:
        # A new token at sign-in: a token seen before it is worth nothing after.
        return cls(csrf_token=secrets.token_urlsafe(32), client=client, reviewer=reviewer)

    def accepts(self, submitted: str | None) -> bool:
        """Whether a form's CSRF token is this session's."""
        return submitted is not None and hmac.compare_digest(submitted.encode(), self.csrf_token.encode())


class SessionCookies:
    """Reads and writes the signed session cookie."""

    def __init__(self, settings: Settings) -> None:
        secret = settings.ui_session_secret.get_secret_value() if settings.ui_session_secret else None
        if secret is None:
            secret = secrets.token_urlsafe(32)
            if not settings.open_access and settings.api_keys:
                logger.warning(
                    "KOMMUNROUTER_UI_SESSION_SECRET is not set: staff sign-ins end when the service restarts "
                    "and are not shared between replicas"
                )
        self._serializer = URLSafeTimedSerializer(secret, salt=_SALT)
        self.max_age_s = int(settings.ui_session_hours * 3600)

    def read(self, request: Request) -> StaffSession | None:
        """The request's session, or None when it has none, or one that is forged or expired."""
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            return None
        try:
            data: dict[str, Any] = self._serializer.loads(cookie, max_age=self.max_age_s)
            return StaffSession(**data)
        except (BadSignature, TypeError):
            return None

    def write(self, response: Response, session: StaffSession, *, secure: bool) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            self._serializer.dumps(asdict(session)),
            max_age=self.max_age_s,
            path="/ui",
            httponly=True,
            samesite="strict",
            secure=secure,
        )

    def clear(self, response: Response) -> None:
        response.delete_cookie(SESSION_COOKIE, path="/ui", httponly=True, samesite="strict")
