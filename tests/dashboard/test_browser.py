"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against the real
service (uvicorn, embedded worker, SQLite file) evaluating the real SmolLM2.

Needs /usr/bin/chromium (``scripts/install-browser.sh``); Playwright's own browser downloads
are not used.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from frankensweep.api.app import create_app
from frankensweep.core.config import Settings
from frankensweep.models import smollm2_path
from frankensweep.search import Plan, recipe_to_plan

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(app):
    """``app`` served by uvicorn in a thread on a free loopback port; its base URL."""
    import uvicorn

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        uv.should_exit = True
        thread.join(timeout=60)


@pytest.fixture
def server(tmp_path, monkeypatch):
    """The real app (embedded worker, SQLite file) served by uvicorn in a thread; its base URL."""
    monkeypatch.setenv("FRANKENSWEEP_DEVICE", "cpu")
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'frankensweep.db'}",
        broker_url=None,
        device="cpu",
        dtype="float32",
    )
    with serving(create_app(settings, dispatch=True)) as url:
        yield url


@pytest.fixture
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: run scripts/install-browser.sh")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def open_page(browser):
    """A browser context and page; the list collects the page's console errors and exceptions."""
    context = browser.new_context(accept_downloads=True, viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on(
        "console",
        lambda m: errors.append(f"{page.url}: console: {m.text}") if m.type == "error" else None,
    )
    page.on("pageerror", lambda e: errors.append(f"{page.url}: pageerror: {e}"))
    return context, page, errors


def fill_sweep(page, name: str, slice_size: str) -> None:
    """The new-sweep form: SmolLM2, an overlap space, perplexity on 256 tokens."""
    page.fill("#name", name)
    page.fill("#model", str(smollm2_path()))
    page.fill("#slice_size", slice_size)
    page.fill("#jump", "3,5,2")
    page.fill("#last_slice", "8")
    page.fill("#ppl-tokens", "256")
    page.fill("#ppl-ctx", "128")


def test_submit_watch_sort_open_and_download(server, browser, tmp_path):
    shots = tmp_path / "screenshots"
    shots.mkdir()
    context, page, errors = open_page(browser)

    # the empty list, then the form
    page.goto(server + "/")
    assert "No sweeps yet" in page.inner_text("main")
    page.click("text=New sweep >> nth=0")
    page.wait_for_url(server + "/new")

    # a bad value: the API's 422 message appears next to the form, nothing is stored
    fill_sweep(page, "browser sweep", slice_size="40")
    page.click("#submit")
    page.wait_for_selector(".field-error.shown")
    shown = page.inner_text(".field-error.shown")
    assert "slice_size=40 is longer" in shown, shown
    assert "slice_size=40" in page.inner_text("#form-errors")
    page.screenshot(path=shots / "new-422.png", full_page=True)

    # the good sweep: 7 overlap plans + the base model
    page.fill("#slice_size", "8,14,2")
    page.click("#submit")
    page.wait_for_url(re.compile(r".*/sweeps/\d+$"))
    sweep_id = int(page.url.rsplit("/", 1)[1])

    # live updates: the page polls the API until the sweep is done
    started = time.monotonic()
    page.wait_for_function(
        "document.getElementById('sweep-status').textContent.trim() === 'done'",
        timeout=600_000,
        polling=500,
    )
    print(f"sweep finished after {time.monotonic() - started:.1f} s of watching")
    page.wait_for_selector("#heatmap .main-svg")
    page.wait_for_selector("#best-so-far .main-svg")
    assert page.is_hidden("#cancel")
    assert "8/8 finished" in page.inner_text("#sweep-progress")
    rows = page.locator("#leaderboard tbody tr")
    assert rows.count() == 8
    assert "reference" in (rows.nth(0).get_attribute("class") or "")
    assert rows.nth(0).get_attribute("data-plan") == "0-30"
    page.screenshot(path=shots / "sweep.png", full_page=True)

    # client-side sort by every metric column; the reference row stays first
    def column(key: str) -> list[float]:
        return [
            float(v)
            for v in page.eval_on_selector_all(
                "#leaderboard tbody tr:not(.reference)",
                f"rows => rows.map(r => r.getAttribute('data-{key}'))",
            )
        ]

    metric_keys = page.eval_on_selector_all(
        "#leaderboard th[data-key^='m-']", "ths => ths.map(t => t.dataset.key)"
    )
    assert metric_keys, "no metric columns"
    for key in metric_keys:
        page.click(f"#leaderboard th[data-key='{key}']")
        assert column(key) == sorted(column(key))
        page.click(f"#leaderboard th[data-key='{key}']")
        assert column(key) == sorted(column(key), reverse=True)
        assert "reference" in (rows.nth(0).get_attribute("class") or "")
    page.click("#leaderboard th[data-key='positions']")
    assert column("positions") == sorted(column("positions"))
    page.click("#leaderboard th[data-key='rank']")
    assert column("rank") == list(range(1, 8))
    page.screenshot(path=shots / "sweep-sorted.png", full_page=True)

    # the leaderboard downloads
    with page.expect_download() as download:
        page.click("#download-csv")
    csv_text = Path(download.value.path()).read_text()
    assert csv_text.splitlines()[0].startswith("rank,candidate_id,reference,plan")
    assert len(csv_text.splitlines()) == 1 + 8

    # the best candidate's page and its recipe
    best = rows.nth(1)
    best_plan = best.get_attribute("data-plan")
    best.locator("a").first.click()
    page.wait_for_url(re.compile(r".*/candidates/\d+$"))
    assert page.inner_text("#plan") == best_plan
    page.wait_for_selector("section.result[data-kind='perplexity']")
    page.screenshot(path=shots / "candidate.png", full_page=True)
    with page.expect_download() as download:
        page.click("#download-recipe")
    recipe = Path(download.value.path()).read_text()
    assert download.value.suggested_filename.endswith(".yaml")
    assert recipe_to_plan(recipe).plan == Plan.parse(best_plan)
    assert yaml.safe_load(recipe)["merge_method"] == "passthrough"

    # the list shows the finished sweep with its best score
    page.goto(server + "/")
    row = page.locator(f"#sweeps tr[data-sweep='{sweep_id}']")
    assert row.get_attribute("data-status") == "done"
    assert "perplexity" in row.inner_text()
    page.screenshot(path=shots / "sweeps.png", full_page=True)

    # an unknown sweep
    page.goto(server + "/sweeps/999")
    assert "sweep 999 not found" in page.inner_text("#not-found")

    context.close()
    print(f"screenshots in {shots}")
    # Chromium logs every 4xx response as a console error: the two provoked on purpose (the bad
    # submission's 422, the unknown sweep's 404) are expected; nothing else may be there
    expected = (
        "/new: console: Failed to load resource: the server responded with a status of 422",
        "/sweeps/999: console: Failed to load resource: the server responded with a status of 404",
    )
    unexpected = [e for e in errors if not any(x in e for x in expected)]
    assert len(errors) - len(unexpected) == 2, errors
    assert unexpected == [], unexpected


def test_strategy_form_422s_then_a_halving_sweep_prunes(server, browser, tmp_path):
    """The form's strategy part: per-kind fields, the API's 422s next to them, then a real
    halving sweep (4 plans screened on perplexity over 128 tokens, the best 2 at full) watched
    until its pruned rows show their level and reason."""
    shots = tmp_path / "screenshots"
    shots.mkdir()
    context, page, errors = open_page(browser)

    page.goto(server + "/new")
    fill_sweep(page, "halving in the browser", slice_size="8,14,2")

    # grid shows no strategy settings; tpe shows budget (pre-filled), batch, startup, seed
    assert page.input_value("#strategy-kind") == "grid"
    assert page.is_hidden("#strategy-budget") and page.is_hidden("#strategy-eta")
    page.select_option("#strategy-kind", "tpe")
    assert page.is_visible("#strategy-budget") and page.is_visible("#strategy-batch")
    assert page.is_hidden("#strategy-eta") and page.is_hidden("#strategy-rungs")
    assert page.input_value("#strategy-budget") == "20"
    assert "TPE" in page.inner_text(".strategy-help:not([hidden])")

    # tpe without a budget: pydantic's 422, shown next to the budget field
    page.fill("#strategy-budget", "")
    page.click("#submit")
    budget_error = page.locator('.field-error[data-loc="strategy.budget"]')
    budget_error.wait_for(state="visible")
    assert budget_error.inner_text() == "Field required"
    summary = page.inner_text("#form-errors")
    assert "strategy.tpe.budget: Field required" in summary, summary
    assert "'grid' or 'halving'" not in summary  # the bare-name alternative's noise is left out
    assert page.locator(".field-error.shown").count() == 1
    page.screenshot(path=shots / "new-strategy-422.png", full_page=True)

    # cmaes on an explicit space: the submission check's 422, next to the strategy kind
    page.select_option("#space-kind", "explicit")
    page.fill("#plans", "0-16,8-30\n0-20,10-30")
    page.select_option("#strategy-kind", "cmaes")
    page.fill("#strategy-budget", "2")
    page.click("#submit")
    kind_error = page.locator('.field-error[data-loc="strategy"]')
    kind_error.wait_for(state="visible")
    assert "cmaes needs ordered parameters" in kind_error.inner_text()
    assert page.is_hidden('.field-error[data-loc="strategy.budget"]')  # cleared on resubmit
    assert page.url == server + "/new"

    # halving: eta and rungs appear, batch goes; a budget of 4 plans in the first rung
    page.select_option("#space-kind", "overlap")
    page.select_option("#strategy-kind", "halving")
    assert page.is_visible("#strategy-eta") and page.is_hidden("#strategy-batch")
    assert page.input_value("#strategy-eta") == "3" and page.input_value("#strategy-rungs") == "3"
    page.fill("#strategy-budget", "4")
    page.fill("#strategy-eta", "2")
    page.fill("#strategy-rungs", "2")
    page.click("#submit")
    page.wait_for_url(re.compile(r".*/sweeps/\d+$"))

    assert page.inner_text("#strategy") == "halving · eta 2 · rungs 2 · budget 4 · seed 0"
    assert page.inner_text("#levels") == "perplexity on 128 tokens → full"
    page.wait_for_function(
        "document.getElementById('sweep-status').textContent.trim() === 'done'",
        timeout=600_000,
        polling=500,
    )
    assert page.inner_text("#sweep-round") == "round 2 of 2 · last round"
    # the reference once, 4 screened, 2 of them again at full
    assert "7/7 evaluations finished (100%)" in page.inner_text("#sweep-progress")
    assert "pruned 2" in page.inner_text("#sweep-counts")
    rows = page.locator("#leaderboard tbody tr")
    assert rows.count() == 5
    assert [rows.nth(i).get_attribute("data-status") for i in range(5)] == [
        "done",
        "done",
        "done",
        "pruned",
        "pruned",
    ]
    assert [rows.nth(i).locator("td.reached").inner_text() for i in range(3)] == ["full"] * 3
    for i in (3, 4):
        pruned = rows.nth(i)
        assert "pruned" in (pruned.get_attribute("class") or "")
        reached = pruned.locator("td.reached").inner_text()
        assert reached.startswith("perplexity on 128 tokens") and "perplexity " in reached
        reason = pruned.locator(".status-pruned").get_attribute("title")
        assert reason.startswith("pruned after rung 1 of 2 (perplexity on 128 tokens)"), reason
        assert f"ranked {i} of 4; the best 2 went on" in reason
        assert pruned.locator(".reason").is_visible()
        assert pruned.locator(".reason").inner_text() == reason
    page.screenshot(path=shots / "sweep-halving.png", full_page=True)

    with page.expect_download() as download:
        page.click("#download-csv")
    header = Path(download.value.path()).read_text().splitlines()[0].split(",")
    assert "fidelity_label" in header and "pruned_reason" in header

    # a pruned candidate's page: its level, reason and the screening result
    rows.nth(4).locator("a").first.click()
    page.wait_for_url(re.compile(r".*/candidates/\d+$"))
    assert page.inner_text("#pruned-reason").startswith("pruned after rung 1 of 2")
    assert page.inner_text("#fidelity") == "perplexity on 128 tokens (level 1 of 2)"
    results = page.locator("section.result")
    assert results.count() == 1
    assert results.first.get_attribute("data-level") == "perplexity on 128 tokens"
    page.screenshot(path=shots / "candidate-pruned.png", full_page=True)

    context.close()
    expected = "/new: console: Failed to load resource: the server responded with a status of 422"
    assert [e for e in errors if expected not in e] == [], errors
    assert len(errors) == 2, errors  # the two 422s provoked on purpose


@pytest.fixture
def stored_server(tmp_path):
    """The app without a worker (dispatch=False) on a SQLite file, served by uvicorn: pages of
    sweeps stored by the test itself. Yields (base URL, app)."""
    from frankensweep.db import upgrade

    settings = Settings(database_url=f"sqlite:///{tmp_path / 'stored.db'}", broker_url=None)
    upgrade(settings.database_url)
    app = create_app(settings, dispatch=False)
    with serving(app) as url:
        yield url, app


WINDOW = {"width": 1366, "height": 768}


def widen(app, sweep_id: int) -> None:
    """Give every candidate of a stored sweep eight space parameters: a wide leaderboard."""
    from frankensweep.db import Sweep

    with app.state.sessions() as session:
        for c in session.get(Sweep, sweep_id).candidates:
            if not c.is_reference:
                c.params = {**c.params, **{f"parameter_{k}": 10 * k for k in range(6)}}
        session.commit()


def test_sweep_page_fits_a_1366_px_window_and_plots_every_level(stored_server, browser):
    """A finished halving sweep (3 fidelity levels, pruned rows with reasons, eight parameters):
    at 1366 px the page does not scroll sideways (the leaderboard scrolls inside its box, which
    it needs: without the box the page is wider than the window), and best-so-far has one line
    per level."""
    from test_pages import store_halving_sweep

    url, app = stored_server
    sweep_id, _ = store_halving_sweep(app)
    widen(app, sweep_id)
    context = browser.new_context(viewport=WINDOW)
    page = context.new_page()
    page.goto(f"{url}/sweeps/{sweep_id}")
    page.wait_for_selector("#best-so-far .main-svg")

    def page_width() -> int:
        return page.evaluate("document.documentElement.scrollWidth")

    table = page.evaluate(
        "(() => { const t = document.getElementById('leaderboard');"
        " return [t.scrollWidth, t.parentElement.clientWidth]; })()"
    )
    assert page_width() <= WINDOW["width"], (page_width(), table)
    lines = page.evaluate(
        "document.getElementById('best-so-far').data"
        ".filter(t => t.name.startsWith('best so far')).map(t => [t.name, t.y.length])"
    )
    assert lines == [
        ["best so far: perplexity on 28 tokens", 4],  # every screened plan
        ["best so far: perplexity on 85 tokens", 2],
        ["best so far: full", 1],
    ]
    reference = page.evaluate(
        "document.getElementById('best-so-far').data"
        ".filter(t => t.name === 'base model (full)').map(t => [t.x.length, t.y[0] === t.y[1]])"
    )
    assert reference == [[2, True]]  # the base model's score, dashed across the whole run
    # control: the same table outside its scrolling box makes the page wider than the window
    page.add_style_tag(content=".table-scroll { overflow: visible; }")
    assert page_width() > WINDOW["width"], table

    page.goto(url + "/")
    assert page_width() <= WINDOW["width"]
    context.close()


def test_new_sweep_form_sends_load_options_and_shows_their_422s(server, browser):
    """The form's Loading part: a cap without device_map auto, a GPU this machine lacks (the
    API's 422s, next to max_memory), then an nf4 sweep stored with its load options."""
    context, page, errors = open_page(browser)
    page.goto(server + "/new")
    fill_sweep(page, "nf4 in the browser", slice_size="14")
    page.fill("#load-max-memory", "0=1GiB")
    page.click("#submit")
    caps_error = page.locator('.field-error[data-loc="load.max_memory"]')
    caps_error.wait_for(state="visible")
    assert "add device_map: auto" in caps_error.inner_text()

    page.select_option("#load-device-map", "auto")
    page.fill("#load-max-memory", "7=70GiB, cpu=8GiB")
    page.click("#submit")
    page.wait_for_function(
        "document.querySelector('.field-error[data-loc=\"load.max_memory\"]')"
        ".textContent.includes('GPU 7')"
    )
    assert page.url == server + "/new"

    # what the form sends: only the chosen options (the rest: the server's defaults); the
    # request is answered here, so no sweep is stored and no model loads
    sent: list[dict] = []

    def answer(route):
        sent.append(route.request.post_data_json)
        detail = [{"loc": ["body", "load", "quantization"], "msg": "seen", "type": "test"}]
        route.fulfill(status=422, json={"detail": detail})

    page.route("**/api/sweeps", answer)
    page.fill("#load-max-memory", "")
    page.select_option("#load-device-map", "")
    page.select_option("#load-quantization", "nf4")
    page.select_option("#load-dtype", "bfloat16")
    page.click("#submit")
    page.locator('.field-error[data-loc="load.quantization"]').wait_for(state="visible")
    assert sent[-1]["load"] == {"quantization": "nf4", "dtype": "bfloat16"}
    context.close()
    expected = "/new: console: Failed to load resource: the server responded with a status of 422"
    assert [e for e in errors if expected not in e] == [], errors
