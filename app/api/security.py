"""Access control in one place: API keys stored as sha256 hashes, scopes per client, the FastAPI dependencies
that answer 401/403, and the header a 401 names."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from app.errors import AuthenticationRequired, ConfigurationError, PermissionDenied

API_KEY_HEADER = "X-API-Key"
SCOPES = ("classify", "feedback", "audit", "review")
OPEN_ACCESS_CLIENT = "open-access"
_KEY_HASH = re.compile(r"sha256:([0-9a-f]{64})")

api_key_header = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="The client's API key (configured as a sha256 hash in KOMMUNROUTER_API_KEYS).",
)


def authenticate_header() -> dict[str, str]:
    """The ``WWW-Authenticate`` header of a 401 answer."""
    return {"WWW-Authenticate": f'ApiKey header="{API_KEY_HEADER}"'}


@dataclass(frozen=True)
class ApiClient:
    name: str
    scopes: frozenset[str]


def hash_api_key(key: str) -> str:
    """The configuration form of an API key: ``sha256:<hex>``."""
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def parse_api_keys(configured: Mapping[str, str]) -> dict[str, ApiClient]:
    """Clients by key hash, from ``{client: "sha256:<hex>|scope,scope"}``; ConfigurationError names every problem."""
    clients: dict[str, ApiClient] = {}
    problems = []
    for name, spec in configured.items():
        key_hash, _, scope_list = spec.partition("|")
        scopes = frozenset(scope.strip() for scope in scope_list.split(",") if scope.strip())
        if _KEY_HASH.fullmatch(key_hash.strip()) is None:
            problems.append(f"client {name!r}: the key must be given as sha256:<64 lowercase hex digits>")
        elif key_hash.strip() in clients:
            problems.append(f"client {name!r}: the same key as client {clients[key_hash.strip()].name!r}")
        if not scopes or not scopes <= set(SCOPES):
            problems.append(f"client {name!r}: scopes must be some of {', '.join(SCOPES)} (got {scope_list!r})")
        clients[key_hash.strip()] = ApiClient(name=name, scopes=scopes)
    if problems:
        raise ConfigurationError("invalid KOMMUNROUTER_API_KEYS: " + "; ".join(problems))
    return clients


class AccessControl:
    """Who may call what: API keys with scopes, or every scope for everyone in open mode."""

    def __init__(self, api_keys: Mapping[str, str], *, open_access: bool) -> None:
        self.open_access = open_access
        self._clients = parse_api_keys(api_keys)

    def authorize(self, api_key: str | None, scope: str) -> str:
        """The name of the client holding ``api_key``; raises unless it holds ``scope``."""
        if self.open_access:
            return OPEN_ACCESS_CLIENT
        if not api_key:
            raise AuthenticationRequired(f"send an API key in the {API_KEY_HEADER} header")
        # Looked up by hash: the stored hashes are compared, never the keys, and a hash lookup reveals nothing
        # about how close a guessed key came.
        client = self._clients.get(hash_api_key(api_key))
        if client is None:
            raise AuthenticationRequired(f"the API key in the {API_KEY_HEADER} header is not valid")
        if scope not in client.scopes:
            raise PermissionDenied(f"client {client.name!r} lacks the scope {scope!r} this endpoint needs")
        return client.name


def require_scope(scope: str) -> Callable[..., Awaitable[str]]:
    """A dependency that answers 401/403 unless the request's API key holds ``scope``; it returns the client."""

    async def client_with_scope(
        request: Request, api_key: Annotated[str | None, Security(api_key_header)] = None
    ) -> str:
        access: AccessControl = request.app.state.access
        return access.authorize(api_key, scope)

    return client_with_scope


ClassifyClient = Annotated[str, Depends(require_scope("classify"))]
FeedbackClient = Annotated[str, Depends(require_scope("feedback"))]
AuditClient = Annotated[str, Depends(require_scope("audit"))]
