"""The staff pages over HTTP: sign-in, CSRF, the queue and its actions, the decision and insights pages."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from app.api.security import hash_api_key
from app.audit.models import Decision, Feedback
from app.config import Settings
from app.main import create_app
from app.ui.session import SESSION_COOKIE
from tests.app.conftest import BOTH_DATABASES, serve_app

pytestmark = pytest.mark.anyio

KEYS = {"staff": "staff-key", "auditor": "auditor-key", "classifier": "classifier-key"}
SCOPES = {"staff": "review", "auditor": "classify,audit,feedback,review", "classifier": "classify,feedback"}
PERSONNUMMER = "19800101-1231"
REPORT = f"Brunnslocket på Storgatan 12 är borta, det är farligt! Mitt personnummer är {PERSONNUMMER}."


def staff_settings(make_settings: Callable[..., Settings], **overrides: Any) -> Settings:
    keys = {name: f"{hash_api_key(key)}|{SCOPES[name]}" for name, key in KEYS.items()}
    return make_settings(api_keys=keys, review_threshold=1.0, **overrides)


@pytest.fixture
async def staff(make_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    """The service with keys for the staff pages; every decision needs review (threshold 1.0)."""
    async with serve_app(create_app(staff_settings(make_settings))) as client:
        yield client


def csrf(page: httpx.Response) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match is not None, "no CSRF token on the page"
    return match.group(1)


async def sign_in(client: httpx.AsyncClient, key: str, reviewer: str = "anna.k") -> httpx.Response:
    form = await client.get("/ui/login")
    return await client.post(
        "/ui/login",
        data={"csrf_token": csrf(form), "api_key": key, "reviewer": reviewer, "next": "/ui/"},
    )


async def classify(client: httpx.AsyncClient, text: str = REPORT, case_id: str = "KS-1") -> str:
    answer = await client.post(
        "/v1/classify", json={"text": text, "case_id": case_id}, headers={"X-API-Key": KEYS["classifier"]}
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["request_id"])


async def test_the_pages_ask_for_a_sign_in_with_a_review_key(staff: httpx.AsyncClient) -> None:
    for path in ("/ui/", "/ui/insights", "/ui/decision/x"):
        page = await staff.get(path)
        assert page.status_code == 303
        assert page.headers["location"].startswith("/ui/login?next=")
    refused = await sign_in(staff, KEYS["classifier"])
    assert refused.status_code == 403 and "review" in refused.text
    wrong = await sign_in(staff, "not-a-key")
    assert wrong.status_code == 401
    assert (await staff.get("/ui/")).status_code == 303

    signed_in = await sign_in(staff, KEYS["staff"])
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/ui/"
    cookie = signed_in.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=28800" in cookie
    assert KEYS["staff"] not in cookie
    page = await staff.get("/ui/")
    assert page.status_code == 200 and "Granskningskö" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")


async def test_a_forged_or_foreign_cookie_is_not_a_sign_in(
    staff: httpx.AsyncClient, make_settings: Callable[..., Settings]
) -> None:
    await sign_in(staff, KEYS["staff"])
    good = staff.cookies[SESSION_COOKIE]
    staff.cookies.set(SESSION_COOKIE, good[:-2] + ("AA" if not good.endswith("AA") else "BB"), path="/ui")
    assert (await staff.get("/ui/")).status_code == 303
    # Another process (its own random key) does not accept this one's cookies.
    async with serve_app(create_app(staff_settings(make_settings))) as other:
        other.cookies.set(SESSION_COOKIE, good, path="/ui")
        assert (await other.get("/ui/")).status_code == 303


async def test_forms_without_the_sessions_csrf_token_change_nothing(
    staff: httpx.AsyncClient, audit_engine: Engine
) -> None:
    request_id = await classify(staff)
    await sign_in(staff, KEYS["staff"])
    for token in (None, "forged-token"):
        data = {"action": "confirm"} | ({"csrf_token": token} if token else {})
        answer = await staff.post(f"/ui/review/{request_id}", data=data)
        assert answer.status_code == 403
    with Session(audit_engine) as session:
        assert session.scalars(select(Feedback)).all() == []


@BOTH_DATABASES
async def test_a_correction_from_the_queue_is_stored_as_the_api_stores_it_and_leaves_the_queue(
    staff: httpx.AsyncClient, audit_engine: Engine
) -> None:
    from_page, from_api, stays = [await classify(staff, case_id=f"KS-{n}") for n in range(3)]
    await sign_in(staff, KEYS["auditor"], reviewer="anna.k")
    queue = await staff.get("/ui/")
    for request_id in (from_page, from_api, stays):
        assert f'data-request-id="{request_id}"' in queue.text
    assert PERSONNUMMER not in queue.text and "[PERSONNUMMER]" in queue.text
    assert '<mark class="kw' in queue.text or "kw-" in queue.text

    fields = {"department": "vatten_avlopp", "severity": "akut", "sentiment": ""}
    done = await staff.post(
        f"/ui/review/{from_page}", data={"csrf_token": csrf(queue), "action": "correct", "return_to": "/ui/"} | fields
    )
    assert done.status_code == 303 and "done=corrected" in done.headers["location"]
    api = await staff.post(
        "/v1/feedback",
        json={"request_id": from_api, "department": "vatten_avlopp", "severity": "akut", "reviewer": "anna.k"},
        headers={"X-API-Key": KEYS["auditor"]},
    )
    assert api.status_code == 201

    with Session(audit_engine) as session:
        rows = {row.request_id: row for row in session.scalars(select(Feedback))}
    columns = ("client", "reviewer", "department", "sentiment", "severity", "keywords")
    assert [getattr(rows[from_page], c) for c in columns] == [getattr(rows[from_api], c) for c in columns]
    assert rows[from_page].department == "vatten_avlopp" and rows[from_page].sentiment is None

    after = await staff.get(done.headers["location"])
    assert "Rättelsen sparades" in after.text
    assert f'data-request-id="{from_page}"' not in after.text
    assert f'data-request-id="{from_api}"' not in after.text
    assert f'data-request-id="{stays}"' in after.text

    confirmed = await staff.post(
        f"/ui/review/{stays}", data={"csrf_token": csrf(after), "action": "confirm", "return_to": "/ui/"}
    )
    assert confirmed.status_code == 303
    with Session(audit_engine) as session:
        confirmation = session.scalars(select(Feedback).where(Feedback.request_id == stays)).one()
    assert (confirmation.department, confirmation.sentiment, confirmation.severity) == (None, None, None)
    assert "Inget att granska" in (await staff.get("/ui/")).text

    detail = await staff.get(f"/ui/decision/{from_page}")
    assert detail.status_code == 200
    assert "Rättade förvaltning: Vatten och avlopp, allvarlighet: Akut" in detail.text
    assert PERSONNUMMER not in detail.text


async def test_a_label_outside_the_taxonomy_or_an_unknown_decision_is_refused(
    staff: httpx.AsyncClient, audit_engine: Engine
) -> None:
    request_id = await classify(staff)
    await sign_in(staff, KEYS["staff"])
    token = csrf(await staff.get("/ui/"))
    bad = await staff.post(
        f"/ui/review/{request_id}", data={"csrf_token": token, "action": "correct", "department": "brandkaren"}
    )
    assert bad.status_code == 422
    missing = await staff.post("/ui/review/no-such-id", data={"csrf_token": token, "action": "confirm"})
    assert missing.status_code == 404
    assert (await staff.get("/ui/decision/no-such-id")).status_code == 404
    with Session(audit_engine) as session:
        assert session.scalars(select(Feedback)).all() == []


async def test_filters_and_pages_of_the_queue(staff: httpx.AsyncClient, audit_engine: Engine) -> None:
    ids = [await classify(staff, text=f"Gatlampan på Storgatan {n} är trasig.", case_id=f"K-{n}") for n in range(23)]
    await sign_in(staff, KEYS["staff"])
    with Session(audit_engine) as session:
        departments = {d.id: d.department for d in session.scalars(select(Decision))}
    first, second = await staff.get("/ui/"), await staff.get("/ui/?sida=2")
    shown = re.findall(r'data-request-id="([^"]+)"', first.text) + re.findall(r'data-request-id="([^"]+)"', second.text)
    assert sorted(shown) == sorted(ids) and len(re.findall("data-request-id", first.text)) == 20
    department = departments[ids[0]]
    filtered = await staff.get(f"/ui/?department={department}")
    expected = {i for i in ids if departments[i] == department}
    shown_filtered = set(re.findall(r'data-request-id="([^"]+)"', filtered.text))
    assert shown_filtered <= expected and len(shown_filtered) == min(len(expected), 20)
    assert f"{len(expected)} ärenden att granska" in filtered.text
    other = next(label for label in ("avfall", "skola", "bygg") if label != department)
    assert (
        f"{sum(d == other for d in departments.values())} ärenden att granska"
        in (await staff.get(f"/ui/?department={other}")).text
    )
    assert (await staff.get("/ui/?severity=not-a-label")).text.count("data-request-id") == 0


async def test_insights_draw_svg_charts_of_the_period(staff: httpx.AsyncClient) -> None:
    for n in range(3):
        await classify(staff, case_id=f"K-{n}")
    await sign_in(staff, KEYS["staff"])
    page = await staff.get("/ui/insights?days=7")
    assert page.status_code == 200
    assert page.text.count("<svg") == 5 and "<rect" in page.text
    assert "3 ärenden" in page.text
    assert PERSONNUMMER not in page.text
    custom = await staff.get("/ui/insights?fran=2026-01-01&till=2026-01-31")
    assert custom.status_code == 200 and "0 ärenden 2026-01-01 – 2026-01-31" in custom.text


async def test_open_access_serves_the_pages_without_sign_in(make_settings: Callable[..., Settings]) -> None:
    async with serve_app(create_app(make_settings(open_access=True))) as client:
        request_id = await classify(client)
        page = await client.get("/ui/")
        assert page.status_code == 200 and request_id in page.text or "Inget att granska" in page.text
        assert (await client.get("/ui/insights")).status_code == 200
        assert (await client.get("/ui/static/staff.css")).status_code == 200
        assert (await client.get("/ui/static/../config.py")).status_code == 404
        assert "/ui" not in str((await client.get("/openapi.json")).json()["paths"])
