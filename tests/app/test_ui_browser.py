"""The staff pages in a real browser: headless Chromium (Selenium) against the service under uvicorn."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from app.api.security import hash_api_key
from app.audit.models import Feedback
from app.cli import cli
from app.config import Settings
from tests.browser import chromium_driver, chromium_paths, live_service

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(chromium_paths() is None, reason="needs chromium and chromedriver (make test installs them)"),
]

REVIEW_KEY = "granskare-nyckel"
CLASSIFY_KEY = "system-nyckel"
REPORTS = [
    "Gatlampan på Storgatan 12 har varit släckt i en vecka.",
    "Soptunnan på Ängsvägen 7 tömdes inte i tisdags, ring mig på 070-123 45 67.",
    "Det luktar avlopp från brunnen vid Skolgatan, det är äckligt.",
]


@pytest.fixture
def service(make_settings: Callable[..., Settings]) -> Iterator[str]:
    keys = {
        "reception": f"{hash_api_key(CLASSIFY_KEY)}|classify",
        "handlaggare": f"{hash_api_key(REVIEW_KEY)}|review",
    }
    # Threshold 1.0: every decision waits for review.
    with live_service(make_settings(api_keys=keys, review_threshold=1.0)) as base:
        yield base


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    with chromium_driver(width=1280, height=1000) as driver:
        yield driver


def queued_ids(browser: WebDriver) -> list[str]:
    return [
        case.get_attribute("data-request-id") or "" for case in browser.find_elements(By.CSS_SELECTOR, "article.case")
    ]


def test_a_reviewer_corrects_a_decision_in_the_browser(
    service: str,
    browser: WebDriver,
    audit_engine: Engine,
    database_url: str,
    process_database_url: Callable[[str], None],
    tmp_path: Path,
) -> None:
    with httpx.Client(base_url=service, headers={"X-API-Key": CLASSIFY_KEY}, timeout=30) as client:
        ids = []
        for number, text in enumerate(REPORTS):
            answer = client.post("/v1/classify", json={"text": text, "case_id": f"KS-{number}"})
            assert answer.status_code == 200, answer.text
            ids.append(answer.json()["request_id"])

    # Signing in: the key once, in the form.
    browser.get(f"{service}/ui/")
    assert "/ui/login" in browser.current_url
    browser.find_element(By.ID, "api_key").send_keys(REVIEW_KEY)
    browser.find_element(By.ID, "reviewer").send_keys("anna.k")
    browser.find_element(By.CSS_SELECTOR, "form.login button").click()
    WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.CSS_SELECTOR, "article.case"))
    assert browser.title.startswith("Granskningskö")
    assert sorted(queued_ids(browser)) == sorted(ids)
    assert "070-123 45 67" not in browser.page_source and "[TELEFON]" in browser.page_source
    assert browser.find_elements(By.CSS_SELECTOR, "mark.kw")  # the keyword spans are highlighted

    # Correcting one: the department from the taxonomy, and a severity.
    target = ids[1]
    case = browser.find_element(By.ID, f"case-{target}")
    Select(case.find_element(By.NAME, "department")).select_by_value("avfall")
    Select(case.find_element(By.NAME, "severity")).select_by_value("hog")
    case.find_element(By.CSS_SELECTOR, "form.correct button").click()
    WebDriverWait(browser, 10).until(lambda b: b.find_elements(By.ID, "flash"))
    assert "Rättelsen sparades" in browser.find_element(By.ID, "flash").text
    assert target not in queued_ids(browser)
    assert len(queued_ids(browser)) == 2

    # Confirming one from the keyboard: after an action the first case has the focus; j and k move it, b confirms.
    first = queued_ids(browser)[0]
    assert browser.switch_to.active_element.get_attribute("data-request-id") == first
    browser.switch_to.active_element.send_keys("j")
    assert browser.switch_to.active_element.get_attribute("data-request-id") == queued_ids(browser)[1]
    browser.switch_to.active_element.send_keys("k")
    browser.switch_to.active_element.send_keys("b")
    WebDriverWait(browser, 10).until(lambda b: first not in queued_ids(b))
    assert "Beslutet bekräftades" in browser.find_element(By.ID, "flash").text

    # The correction is in the audit log (the decision page and the table) and in the feedback export.
    browser.get(f"{service}/ui/decision/{target}")
    assert "Rättade förvaltning: Avfall och återvinning, allvarlighet: Hög" in browser.page_source
    assert "anna.k" in browser.page_source
    with Session(audit_engine) as session:
        stored = session.scalars(select(Feedback).where(Feedback.request_id == target)).one()
    assert (stored.client, stored.reviewer, stored.department, stored.severity) == (
        "handlaggare",
        "anna.k",
        "avfall",
        "hog",
    )
    process_database_url(database_url)
    out = tmp_path / "feedback.jsonl"
    result = CliRunner().invoke(cli, ["feedback", "export", "--out", str(out)])
    assert result.exit_code == 0, result.output
    exported = {row["id"]: row for row in map(json.loads, out.read_text(encoding="utf-8").splitlines())}
    assert exported[target]["department"] == "avfall"
    assert exported[target]["severity"] == "hog"

    # The insights page draws its charts.
    browser.get(f"{service}/ui/insights?days=7")
    chart = browser.find_element(By.CSS_SELECTOR, "#chart-daily svg")
    assert chart.size["width"] > 300 and chart.size["height"] > 100
    bars = chart.find_elements(By.TAG_NAME, "rect")
    assert any(float(bar.get_attribute("height") or 0) > 0 for bar in bars)
    assert browser.find_elements(By.CSS_SELECTOR, "#chart-review svg polyline, #chart-review svg circle")

    # Signing out ends the session.
    browser.get(f"{service}/ui/")
    browser.find_element(By.CSS_SELECTOR, "header form button").send_keys(Keys.ENTER)
    WebDriverWait(browser, 10).until(lambda b: "/ui/login" in b.current_url)
    browser.get(f"{service}/ui/")
    assert "/ui/login" in browser.current_url
