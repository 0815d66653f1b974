"""The review workstation's corrected label, worklist age filter and HTML error pages."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.unit.gateway.gateway_fixtures import Harness, harness, token
from tests.unit.gateway.test_review_ui import csrf_of, login, submit


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    with harness(tmp_path, environment="development") as hh:
        yield hh


def test_corrected_label_is_recorded_shown_and_in_the_api(h: Harness) -> None:
    study_id = submit(h)
    login(h)
    page = h.client.get(f"/review/studies/{study_id}").text
    assert 'id="corrected-label"' in page and '<option value="benign">' in page
    r = h.client.post(
        f"/review/studies/{study_id}/verdict",
        data={"csrf": csrf_of(page), "verdict": "disagree", "corrected_label": "benign"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    shown = h.client.get(f"/review/studies/{study_id}").text
    assert 'corrected label: <strong class="corrected">benign</strong>' in shown
    reviews = h.client.get(f"/v1/studies/{study_id}/result", headers=token()).json()["reviews"]
    assert [(r["verdict"], r["corrected_label"]) for r in reviews] == [("disagree", "benign")]


def test_corrected_label_is_optional_and_must_be_a_model_label(h: Harness) -> None:
    study_id = submit(h)
    url = f"/v1/studies/{study_id}/reviews"
    bad = h.client.post(url, json={"verdict": "disagree", "corrected_label": "melanoma?"}, headers=token())
    assert bad.status_code == 422 and "benign, malignant" in bad.json()["detail"]
    ok = h.client.post(url, json={"verdict": "agree"}, headers=token())
    assert ok.status_code == 201 and ok.json()["corrected_label"] is None
    second = h.client.post(
        url, json={"verdict": "disagree", "corrected_label": "benign"}, headers=token(subject="dr-two")
    )
    assert second.status_code == 201 and second.json()["corrected_label"] == "benign"
    login(h)
    page = h.client.get(f"/review/studies/{study_id}").text
    login(h, user="dr-three")
    page = h.client.get(f"/review/studies/{study_id}").text
    r = h.client.post(
        f"/review/studies/{study_id}/verdict",
        data={"csrf": csrf_of(page), "verdict": "agree", "corrected_label": "other"},
    )
    assert r.status_code == 422 and r.headers["content-type"].startswith("text/html")


def test_worklist_age_filter(h: Harness, tmp_path: Path) -> None:
    old, new = submit(h), submit(h)
    with sqlite3.connect(tmp_path / "gw.db") as db:
        db.execute("UPDATE studies SET created_at = datetime(created_at, '-10 days') WHERE id = ?", (old,))
    login(h)

    def listed(age: str) -> set[str]:
        page = h.client.get("/review/", params={"age": age})
        assert page.status_code == 200
        return {s for s in (old, new) if f'data-study="{s}"' in page.text}

    assert listed("") == {old, new}
    assert listed("1d") == listed("7d") == {new}
    assert listed("over-1d") == listed("over-7d") == {old}
    page = h.client.get("/review/", params={"age": "over-7d"}).text
    assert '<option value="over-7d" selected>' in page
    assert h.client.get("/review/", params={"age": "1y"}).status_code == 400


def _html_error(r: object, status: int) -> str:
    import httpx

    assert isinstance(r, httpx.Response)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("text/html") and "<h1>" in r.text
    assert r.headers["content-security-policy"]
    return r.text


def test_error_pages_under_review_are_html(h: Harness) -> None:
    study_id = submit(h)
    login(h)
    assert "Page not found." in _html_error(h.client.get("/review/no-such-page"), 404)
    assert "check the address" in _html_error(h.client.get("/review/studies/not-a-uuid"), 422)
    assert "check the address" in _html_error(h.client.get("/review/?page=abc"), 422)
    r = h.client.post(f"/review/studies/{study_id}/verdict", data={"verdict": "agree"})
    assert "security token" in _html_error(r, 403)
    login(h, roles=("auditor",))
    assert "no clinician role" in _html_error(h.client.get(f"/review/studies/{study_id}"), 403)
    # the API keeps its problem details
    api = h.client.get("/v1/no-such-thing", headers=token())
    assert api.status_code == 404 and api.headers["content-type"] == "application/problem+json"


def test_rate_limited_review_page_is_html_with_retry_after(tmp_path: Path) -> None:
    with harness(tmp_path, environment="development", rate_limit_burst=2, rate_limit_per_minute=1) as h:
        login(h)
        statuses = [h.client.get("/review/").status_code for _ in range(4)]
        assert statuses[-1] == 429
        r = h.client.get("/review/")
        assert "Too many requests" in _html_error(r, 429) and int(r.headers["retry-after"]) > 0


def test_corrected_label_migration_on_the_single_head(tmp_path: Path) -> None:
    import sqlalchemy as sa
    from alembic import command
    from alembic.script import ScriptDirectory
    from sightline_gateway.db.migrations import alembic_config

    assert len(ScriptDirectory.from_config(alembic_config()).get_heads()) == 1, "merge or rebase the heads"
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0004")
        columns = {c["name"]: c for c in sa.inspect(conn).get_columns("reviews")}
        assert columns["corrected_label"]["nullable"]
        command.downgrade(alembic_config(conn), "0003")
        assert "corrected_label" not in {c["name"] for c in sa.inspect(conn).get_columns("reviews")}
