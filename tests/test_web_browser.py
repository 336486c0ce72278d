"""The result pages in real headless Chromium (Playwright driving Debian's /usr/bin/chromium).

The app runs in uvicorn on loopback with the fake pipeline (2 s per run, so the page is seen processing).
Screenshots are saved under artifacts/web/ (gitignored) and their paths printed.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from conftest import DEV_DATA, REPO_ROOT
from fake_graph import AppServer
from fake_pipeline import FakePipeline
from test_web import add_completed, add_old_row, extreme_report, face_thumbnail

from pipeline.labels import BARS, BY_KEY
from pipeline.settings import Settings
from web.server import create_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CLIP = DEV_DATA / "A_real_av" / "pcavs_voxceleb" / "misc__Audio_Source__00086.mp4"
ARTIFACTS = REPO_ROOT / "artifacts" / "web"
KEY = "key-a"
# each bar's fill width / track width, by data-key (bars with a value only)
BAR_RATIOS_JS = """() => Object.fromEntries([...document.querySelectorAll('#scores .score')]
  .filter((e) => e.dataset.value !== '')
  .map((e) => [e.dataset.key, e.querySelector('.bar-fill').getBoundingClientRect().width
                              / e.querySelector('.bar').getBoundingClientRect().width]))"""


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), "chromium is missing: run `make install` (Debian package chromium)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)  # a fresh profile each launch
        yield b
        b.close()


@pytest.fixture()
def site(tmp_path):
    s = Settings(database_url=f"sqlite:///{tmp_path}/db.sqlite3", uploads_dir=tmp_path / "uploads", api_keys=[KEY],
                 queue_poll_s=0.05, job_heartbeat_s=0.2)
    app = create_app(s, pipeline=FakePipeline(delay_s=2.0))
    server = AppServer(app).start()
    yield server, app.state.repo
    server.stop()


@pytest.fixture()
def page(browser):
    ctx = browser.new_context(viewport={"width": 1000, "height": 900})
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    pg.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
    yield pg, errors
    ctx.close()


def sign_in(pg, url: str) -> None:
    pg.goto(f"{url}/")
    pg.fill("#api-key", KEY)
    pg.click("#key-form button")
    pg.wait_for_selector("#history ul, #history p:not(.loading)")  # the list, or "no detections yet"


def screenshot(pg, name: str, capsys) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    pg.screenshot(path=str(path), full_page=True)
    with capsys.disabled():  # in the test output even when pytest captures it
        print(f"\nscreenshot: {path}")
    return path


def test_upload_through_the_page_until_completed_and_bars_match_the_scores(site, page, capsys):
    server, _ = site
    pg, errors = page
    sign_in(pg, server.url)
    assert "Enter your API key" not in pg.inner_text("#history")
    pg.set_input_files("#file", str(CLIP))
    t0 = time.monotonic()
    pg.click("#upload-button")
    pg.wait_for_selector("#upload-message .notice:has-text('queued')")
    item = pg.locator(".history li").first
    assert item.get_attribute("data-status") in ("pending", "processing")
    seen = {item.get_attribute("data-status")}
    while (status := item.get_attribute("data-status")) != "completed":  # the page polls by itself
        seen.add(status)
        assert time.monotonic() - t0 < 30, f"stuck: {seen}"
        time.sleep(0.1)
    assert "processing" in seen, seen  # it was shown while the (2 s) analysis ran
    task_id = item.get_attribute("data-task-id")
    row = httpx.get(f"{server.url}/history/{task_id}", headers={"Authorization": f"Bearer {KEY}"}).json()
    ds = row["detector_scores"]
    badge = item.locator("[data-role=status]")
    assert badge.inner_text().strip().lower() == row["detection_result"].replace("_", " ")
    assert row["detection_result"] in badge.get_attribute("class")
    item.locator("a").click()
    pg.wait_for_selector("#scores")
    assert pg.inner_text("#verdict h1") == ds["verdict"].replace("_", " ")
    ratios = pg.evaluate(BAR_RATIOS_JS)
    keys = ["visual_artifacts", "temporal_consistency", "audio_synthesis", "face_quality", "lip_sync_error",
            "mouth_blur", "voice_change", "final_weighted_score"]
    assert sorted(ratios) == sorted(keys)
    for key in keys:  # every bar is the stored value in the orientation labels.json gives it
        shown = BY_KEY[key].shown(ds[key])
        assert ratios[key] == pytest.approx(shown, abs=0.005), key
        value_text = pg.inner_text(f"#scores .score[data-key={key}] .score-value")
        assert value_text.endswith(" %") and abs(int(value_text[:-2]) - 100 * shown) <= 0.5 + 1e-9, key
        if key != "face_quality":
            assert "higher = more authentic" in pg.inner_text(f"#scores .score[data-key={key}]"), key
    labels = pg.locator("#scores .score-label").all_inner_texts()
    assert labels == [b.label for b in BARS]
    assert "fake:visual" in pg.inner_text("#metadata")
    screenshot(pg, "upload_completed_detail.png", capsys)
    pg.click("a.back")
    pg.wait_for_selector(f".history li[data-task-id='{task_id}']")
    assert errors == []


def test_old_rows_and_0_and_100_percent_bars(site, page, capsys):
    server, store = site
    pg, errors = page
    add_old_row(store, None)  # a seed-era row: no task_id, no detector_scores
    time.sleep(0.002)
    add_old_row(store, "old-image")
    time.sleep(0.002)
    add_completed(store, "extremes", extreme_report(face_thumbnail()))
    sign_in(pg, server.url)
    items = pg.locator(".history li")
    assert items.count() == 3
    assert [items.nth(i).locator("[data-role=status]").inner_text().strip().lower() for i in range(3)] == ["fake"] * 3

    for i in (1, 2):  # both old rows (with and without a task_id) open without error
        items.nth(i).locator("a").click()
        pg.wait_for_selector("#no-scores")
        assert pg.inner_text("#verdict h1") == "FAKE"
        assert "confidence 88 %" in pg.inner_text("#verdict")  # 87.5 stored
        assert "No per-detector scores" in pg.inner_text("#no-scores")
        assert pg.locator("#scores").count() == 0
        if i == 1:
            screenshot(pg, "old_row_detail.png", capsys)
        pg.click("a.back")
        pg.wait_for_selector(".history li")

    items.first.locator("a").click()
    pg.wait_for_selector("#scores")
    ratios = pg.evaluate(BAR_RATIOS_JS)
    # stored: visual P(fake) 1, temporal consistency 0, audio P(fake) 0, mouth blur 0, fused 0.75; shown higher =
    # more authentic
    assert ratios == {"visual_artifacts": 0.0, "temporal_consistency": 0.0,
                      "audio_synthesis": pytest.approx(1.0, abs=1e-3), "face_quality": pytest.approx(1.0, abs=1e-3),
                      "mouth_blur": pytest.approx(1.0, abs=1e-3), "final_weighted_score": pytest.approx(0.25, abs=5e-3)}
    assert pg.inner_text("#scores .score[data-key=visual_artifacts] .score-value") == "0 %"
    assert pg.inner_text("#scores .score[data-key=audio_synthesis] .score-value") == "100 %"
    fill0 = pg.locator("#scores .score[data-key=visual_artifacts] .bar-fill").bounding_box()
    assert fill0 is None or fill0["width"] == 0  # a 0 % bar draws nothing
    lips = pg.inner_text("#scores .score[data-key=lip_sync_error]")
    assert "NOT APPLICABLE" in lips.upper() and "no speech in the audio track" in lips
    assert pg.locator("#scores .score[data-key=lip_sync_error] .bar").count() == 0
    charts = pg.locator("#timelines .timeline")
    assert [charts.nth(i).get_attribute("data-slot") for i in range(charts.count())] == ["visual", "temporal", "audio",
                                                                                       "mouth"]
    assert pg.locator("#timelines .timeline[data-slot=visual] rect").count() == 6
    img = pg.locator("#faces img")
    assert img.count() == 1 and pg.evaluate("() => document.querySelector('#faces img').naturalWidth") == 112
    assert "face 0 (main)" in pg.inner_text("#faces")
    meta = pg.inner_text("#metadata")
    assert "model:visual" in meta and "seed-fixed-weights" in meta and "224×224" in meta
    screenshot(pg, "extremes_detail.png", capsys)
    assert errors == []


def test_a_partial_result_says_so_at_the_top(site, page, capsys):
    from dataclasses import replace

    server, store = site
    pg, errors = page
    missing = ("faces (retinaface_mnet025): weights file retinaface_mobilenet0.25_Final.pth not found",)
    add_completed(store, "partial", replace(extreme_report(), missing=missing))
    add_completed(store, "full", extreme_report())
    sign_in(pg, server.url)
    pg.goto(f"{server.url}/#/d/partial")
    pg.wait_for_selector("#verdict #partial")
    banner = pg.inner_text("#verdict #partial")
    assert "PARTIAL RESULT" in banner and "retinaface_mobilenet0.25_Final.pth not found" in banner
    screenshot(pg, "partial_detail.png", capsys)
    pg.goto(f"{server.url}/#/d/full")  # same page, new hash: wait for the other detection to be drawn
    pg.wait_for_function("() => (document.querySelector('#metadata') || {innerText: ''}).innerText"
                         ".includes('full')")
    assert pg.locator("#partial").count() == 0
    assert errors == []
