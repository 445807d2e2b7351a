"""Stored script injection (issue 14, item 1): text a submission controls (a plan's model names,
a sweep's name, a failure reason) is drawn on the pages, with the API token in localStorage.
Every page must show it as text, in a real browser, and run none of it."""

from __future__ import annotations

import threading
import time

import pytest
from test_browser import CHROMIUM, CHROMIUM_ARGS

from frankensweep.api.app import create_app
from frankensweep.core.config import Settings
from frankensweep.core.net import free_port
from frankensweep.db import make_engine, make_sessionmaker
from frankensweep.evals.registry import eval_key, parse_eval
from frankensweep.search import Plan
from frankensweep.testing.sweeps import seed_sweep, store_scores

pytestmark = pytest.mark.slow

#: each payload sets a global when it runs, and breaks out of a different context
PAYLOADS = [
    "<img/src/onerror=window.__pwned=1>",  # element content (a label, a title)
    'x"><svg/onload=window.__pwned=2>',  # an attribute (aria-label="...")
    "</script><script>window.__pwned=3</script>",  # the chart data's <script> element
    "<!--<script>window.__pwned=4//",  # the script data escaped states
]
PPL = {"kind": "perplexity", "corpus": "pydoc_data.topics", "tokens": 256, "ctx": 128}


@pytest.fixture
def hostile(tmp_path):
    """A server whose database holds a sweep named, planned and failed by an attacker."""
    import uvicorn

    url = f"sqlite:///{tmp_path / 'fs.db'}"
    settings = Settings(database_url=url, trusted_hosts="127.0.0.1")
    app = create_app(settings, dispatch=False)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.05)
    plans = [(Plan.base(8), {})] + [
        (Plan.parse(f"0-{4 + i}@{p},{2 + i}-8"), {"index": i}) for i, p in enumerate(PAYLOADS)
    ]
    engine = make_engine(url)
    with make_sessionmaker(engine)() as s:
        sweep = seed_sweep(
            s,
            plans,
            lambda i, plan: {"status": "failed" if i == 1 else "done", "error": PAYLOADS[0]},
            name=f"sweep {PAYLOADS[1]}",
            model=f"/models/{PAYLOADS[0]}",
            num_layers=8,
            space={"kind": "explicit", "plans": [str(p) for p, _ in plans[1:]]},
            evals=[PPL],
            strategy={"kind": "grid"},
            status="done",
        )
        key = eval_key(parse_eval(PPL))
        scores = [
            (plan, key, "perplexity", {"perplexity": 10.0 + i}, None)
            for i, (plan, _) in enumerate(plans)
        ]
        store_scores(s, sweep.model_key or sweep.model, scores)
        s.commit()
        ids = sweep.id, [c.id for c in sweep.candidates]
    engine.dispose()
    yield f"http://127.0.0.1:{port}", *ids
    server.should_exit = True
    thread.join(timeout=30)


def test_no_page_runs_text_a_submission_controls(hostile):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: run scripts/install-browser.sh")
    sync_api = pytest.importorskip("playwright.sync_api")
    url, sweep_id, candidate_ids = hostile
    pages = ["/", f"/sweeps/{sweep_id}", *[f"/candidates/{c}" for c in candidate_ids]]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        for path in pages:
            page.goto(url + path)
            page.wait_for_load_state("networkidle")
            page.mouse.move(200, 300)  # hover handlers, Plotly's hover text
            assert page.evaluate("window.__pwned") is None, path
            text = page.inner_text("body")
            if path == f"/sweeps/{sweep_id}":
                for payload in PAYLOADS:  # shown as the text it is
                    assert payload in text, (path, payload)
                assert page.locator("svg.plan").count() == len(PAYLOADS) + 1
                assert page.evaluate("JSON.parse(document.getElementById('chart-data').text)")
        browser.close()
    assert dialogs == []
