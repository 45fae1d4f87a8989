"""The staff pages under ``/ui``: the review queue, one decision, the insights, sign-in.

Server-rendered (Jinja2) with plain forms; every form carries the session's CSRF token. A correction or a
confirmation is stored by the same function as ``POST /v1/feedback``. The pages show only the stored (redacted)
text. They are not part of the API and stay out of its OpenAPI schema.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from app.api.deps import DbSession, DecisionsDep, SettingsDep, app_state
from app.api.security import OPEN_ACCESS_CLIENT, AccessControl
from app.artifact import Manifest
from app.audit.database import audit_database_errors
from app.audit.insights import insights, review_queue
from app.audit.repository import get_decision
from app.config import Settings
from app.decisions import Correction
from app.errors import AuditUnavailable, AuthenticationRequired, DecisionNotFound, InvalidFeedback, PermissionDenied
from app.ui.session import CSRF_FIELD, SessionCookies, StaffSession
from app.ui.views import Taxonomy, decision_view, feedback_views, insights_view

logger = logging.getLogger(__name__)

UI_DIR = Path(__file__).parent
STATIC_FILES = {path.name: path for path in (UI_DIR / "static").iterdir() if path.is_file()}
REVIEW_SCOPE = "review"
PAGE_SIZE = 20
PERIODS = (7, 30, 90, 365)
DEFAULT_PERIOD = 30
MAX_PERIOD_DAYS = 800
LABEL = r"^[A-Za-z0-9_]{1,64}$"
SECURITY_HEADERS = {
    # Everything comes from the service itself: no CDN, no inline script or style.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

router = APIRouter(prefix="/ui", include_in_schema=False)
templates = Jinja2Templates(directory=UI_DIR / "templates")
ManifestDep = Annotated[Manifest, Depends(app_state("manifest"))]
AccessDep = Annotated[AccessControl, Depends(app_state("access"))]


def session_cookies(request: Request, settings: SettingsDep) -> SessionCookies:
    """The app's cookie signer, made on first use (its key may be random per process)."""
    cookies: SessionCookies | None = getattr(request.app.state, "staff_session_cookies", None)
    if cookies is None:
        cookies = request.app.state.staff_session_cookies = SessionCookies(settings)
    return cookies


CookiesDep = Annotated[SessionCookies, Depends(session_cookies)]


def staff_zone(settings: Settings) -> ZoneInfo:
    try:
        return ZoneInfo(settings.ui_timezone)
    except (ZoneInfoNotFoundError, ValueError):
        logger.warning("unknown time zone %r (KOMMUNROUTER_UI_TIMEZONE): the staff pages use UTC", settings.ui_timezone)
        return ZoneInfo("UTC")


class Page:
    """What every page needs: the visitor's session (made on the first visit) and how to answer."""

    def __init__(self, request: Request, cookies: CookiesDep, access: AccessDep) -> None:
        self.request = request
        self.cookies = cookies
        self.open_access = access.open_access
        existing = cookies.read(request)
        self.session = existing or StaffSession.anonymous()
        self._new_session = existing is None

    @property
    def signed_in(self) -> bool:
        return self.open_access or self.session.client is not None

    @property
    def client(self) -> str:
        return self.session.client or OPEN_ACCESS_CLIENT

    def render(self, template: str, status_code: int = 200, **context: Any) -> Response:
        context |= {"csrf_field": CSRF_FIELD, "csrf_token": self.session.csrf_token, "page": self}
        return self.finish(templates.TemplateResponse(self.request, template, context, status_code=status_code))

    def redirect(self, url: str) -> Response:
        return self.finish(RedirectResponse(url, status_code=303))

    def error(self, status_code: int, message: str) -> Response:
        return self.render("error.html", status_code=status_code, message=message)

    def finish(self, response: Response, *, session: StaffSession | None = None) -> Response:
        if session is not None or self._new_session:
            self.cookies.write(response, session or self.session, secure=self.request.url.scheme == "https")
        response.headers.update(SECURITY_HEADERS)
        return response

    def sign_in_redirect(self) -> Response:
        target = self.request.url.path + (f"?{self.request.url.query}" if self.request.url.query else "")
        return self.redirect("/ui/login?" + urlencode({"next": target}))

    async def form(self) -> dict[str, str] | None:
        """The submitted urlencoded form, or None unless it carries this session's CSRF token."""
        body = (await self.request.body()).decode("utf-8", errors="replace")
        form = {key: values[-1] for key, values in parse_qs(body, keep_blank_values=True).items()}
        return form if self.session.accepts(form.get(CSRF_FIELD)) else None


PageDep = Annotated[Page, Depends()]


def _local_target(target: str | None) -> str:
    """A redirect target inside the staff pages (never another site)."""
    if target and target.startswith("/ui/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui/"


@router.get("")
def ui_root() -> Response:
    return RedirectResponse("/ui/", status_code=308)


@router.get("/static/{name}")
def static_file(name: str) -> Response:
    """The pages' CSS and script, served by the service itself."""
    path = STATIC_FILES.get(name)
    if path is None:
        return Response(status_code=404)
    return FileResponse(path, headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"})


@router.get("/login")
def login_form(page: PageDep, next: str | None = None) -> Response:
    if page.open_access:
        return page.redirect(_local_target(next))
    return page.render("login.html", next=_local_target(next), problem=None)


@router.post("/login")
async def login(page: PageDep, access: AccessDep) -> Response:
    form = await page.form()
    if form is None:
        return page.error(403, "Formuläret har gått ut. Ladda om sidan och försök igen.")
    target = _local_target(form.get("next"))
    try:
        client = access.authorize(form.get("api_key", "").strip(), REVIEW_SCOPE)
    except AuthenticationRequired:
        return page.render("login.html", status_code=401, next=target, problem="Nyckeln är inte giltig.")
    except PermissionDenied:
        return page.render(
            "login.html", status_code=403, next=target, problem="Nyckeln saknar behörigheten review (granskning)."
        )
    reviewer = " ".join(form.get("reviewer", "").split())[:256] or None
    logger.info("staff sign-in of client %s", client)
    return page.finish(
        RedirectResponse(target, status_code=303), session=StaffSession.signed_in(client=client, reviewer=reviewer)
    )


@router.post("/logout")
async def logout(page: PageDep) -> Response:
    if await page.form() is None:
        return page.error(403, "Formuläret har gått ut. Ladda om sidan och försök igen.")
    response = RedirectResponse("/ui/login", status_code=303)
    page.cookies.clear(response)
    response.headers.update(SECURITY_HEADERS)
    return response


@router.get("/")
def queue_page(
    page: PageDep,
    db: DbSession,
    manifest: ManifestDep,
    settings: SettingsDep,
    department: Annotated[str | None, Query(pattern=LABEL)] = None,
    severity: Annotated[str | None, Query(pattern=LABEL)] = None,
    page_number: Annotated[int, Query(alias="sida", ge=1, le=100_000)] = 1,
    done: Annotated[str | None, Query(pattern="^(confirmed|corrected)$")] = None,
    decision: Annotated[str | None, Query(max_length=128)] = None,
) -> Response:
    """The review queue: open decisions, most severe first, then oldest first."""
    if not page.signed_in:
        return page.sign_in_redirect()
    taxonomy = Taxonomy.of(manifest)
    zone = staff_zone(settings)
    with audit_database_errors():
        queue = review_queue(
            db,
            severity_order=taxonomy.most_severe_first,
            department=department,
            severity=severity,
            limit=PAGE_SIZE,
            offset=(page_number - 1) * PAGE_SIZE,
        )
    now = datetime.now(UTC)
    filters = {key: value for key, value in (("department", department), ("severity", severity)) if value}
    pages = max(1, -(-queue.total // PAGE_SIZE))
    return page.render(
        "queue.html",
        rows=[decision_view(row, taxonomy, zone=zone, now=now) for row in queue.items],
        queue=queue,
        taxonomy=taxonomy,
        department=department,
        severity=severity,
        page_number=page_number,
        pages=pages,
        filters=filters,
        here="/ui/?" + urlencode(filters | ({"sida": str(page_number)} if page_number > 1 else {})),
        page_url=lambda number: "/ui/?" + urlencode(filters | {"sida": str(number)}),
        done=done,
        done_decision=decision,
    )


@router.post("/review/{request_id}")
async def review_decision(request_id: str, page: PageDep, db: DbSession, decisions: DecisionsDep) -> Response:
    """Confirm or correct a decision: stored as ``POST /v1/feedback`` stores it."""
    if not page.signed_in:
        return page.error(401, "Logga in igen för att granska.")
    form = await page.form()
    if form is None:
        return page.error(403, "Formuläret har gått ut. Ladda om sidan och försök igen.")
    action = form.get("action")
    if action not in ("confirm", "correct"):
        return page.error(422, "Okänd åtgärd.")
    labels: dict[str, str | None] = dict.fromkeys(("department", "sentiment", "severity"))
    if action == "correct":
        labels = {task: form.get(task) or None for task in labels}
        if labels["department"] is None:
            return page.error(422, "Välj den förvaltning som ärendet ska till.")
    try:
        decisions.record_feedback(
            db,
            request_id=request_id,
            client=page.client,
            correction=Correction(
                reviewer=page.session.reviewer,
                department=labels["department"],
                sentiment=labels["sentiment"],
                severity=labels["severity"],
            ),
        )
    except DecisionNotFound:
        return page.error(404, "Beslutet finns inte i granskningsloggen.")
    except InvalidFeedback:
        return page.error(422, "Etiketten finns inte i modellens taxonomi.")
    except AuditUnavailable:
        return page.error(503, "Granskningsloggen går inte att nå just nu. Försök igen om en stund.")
    back = _local_target(form.get("return_to"))
    done = "confirmed" if action == "confirm" else "corrected"
    separator = "&" if "?" in back else "?"
    return page.redirect(f"{back}{separator}{urlencode({'done': done, 'decision': request_id})}")


@router.get("/decision/{request_id}")
def decision_page(
    request_id: str, page: PageDep, db: DbSession, manifest: ManifestDep, settings: SettingsDep
) -> Response:
    """One decision with its corrections."""
    if not page.signed_in:
        return page.sign_in_redirect()
    taxonomy = Taxonomy.of(manifest)
    zone = staff_zone(settings)
    try:
        with audit_database_errors():
            decision = get_decision(db, request_id=request_id)
            view = decision_view(decision, taxonomy, zone=zone, now=datetime.now(UTC))
            feedback = feedback_views(decision, taxonomy, zone=zone)
    except DecisionNotFound:
        return page.error(404, "Beslutet finns inte i granskningsloggen.")
    return page.render(
        "decision.html", decision=view, feedback=feedback, taxonomy=taxonomy, here=f"/ui/decision/{request_id}"
    )


def _period(zone: ZoneInfo, days: int, start: date | None, end: date | None) -> tuple[datetime, datetime]:
    """``[since, until)`` in UTC: whole local days, ``days`` up to today unless from/to dates are given."""
    today = datetime.now(zone).date()
    last = min(end or today, today + timedelta(days=1))
    first = start or last - timedelta(days=days - 1)
    first = max(min(first, last), last - timedelta(days=MAX_PERIOD_DAYS - 1))
    since = datetime.combine(first, time(), tzinfo=zone).astimezone(UTC)
    until = datetime.combine(last + timedelta(days=1), time(), tzinfo=zone).astimezone(UTC)
    return since, until


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _date(value: str | None) -> date | None:
    if not value or _DATE.fullmatch(value) is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


@router.get("/insights")
def insights_page(
    page: PageDep,
    db: DbSession,
    manifest: ManifestDep,
    settings: SettingsDep,
    days: Annotated[int, Query(ge=1, le=MAX_PERIOD_DAYS)] = DEFAULT_PERIOD,
    start: Annotated[str | None, Query(alias="fran", max_length=10)] = None,
    end: Annotated[str | None, Query(alias="till", max_length=10)] = None,
) -> Response:
    """Reports per department over time, sentiment and severity mix, frequent keywords, review and agreement."""
    if not page.signed_in:
        return page.sign_in_redirect()
    taxonomy = Taxonomy.of(manifest)
    zone = staff_zone(settings)
    since, until = _period(zone, days, _date(start), _date(end))
    with audit_database_errors():
        data = insights(db, zone=zone, since=since, until=until)
    view = insights_view(data, taxonomy, zone=zone)
    return page.render(
        "insights.html",
        view=view,
        periods=PERIODS,
        days=days if start is None and end is None else None,
        first_day=since.astimezone(zone).date(),
        last_day=(until.astimezone(zone) - timedelta(microseconds=1)).date(),
        here="/ui/insights",
    )
