"""`sealpool web` in a real headless Chromium: the page shows what `pool stats --json` and
`workers --json` print, refreshes by itself, shows a sector's history; and it stays on
loopback unless given a password."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from click.testing import CliRunner

from sealpool.cli import cli
from sealpool.worker_profiles.plan import SlotPlan
from sealpool.worker_profiles.slots import SlotPool

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", shutil.which("chromedriver")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--window-size=1400,1000",
)  # fmt: skip
needs_chromium = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and CHROMEDRIVER),
    reason="no Chromium: `apt-get install chromium chromium-driver` (.ci/run does on Debian)",
)


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def cli_json(*args: str) -> object:
    code, out = run(*args, "--json")
    assert code == 0, out
    return json.loads(out)


def until(check: Callable[[], object], what: str, timeout_s: float = 30.0) -> object:
    """Wait for ``check`` to return something truthy (generous deadline, short polls)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s} s: {what}")


def fetch(url: str, password: str | None = None) -> int:
    request = urllib.request.Request(url)
    if password:
        token = base64.b64encode(f"op:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


@pytest.fixture
def serve(cli_env: str) -> Iterator[Callable[..., str]]:
    """Start `sealpool web` (its args) on a free loopback port; its base URL."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(*args: str, password: str | None = None) -> str:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        command = [sys.executable, "-m", "sealpool", "web", "--port", str(port), *args]
        processes.append(subprocess.Popen(command))
        url = f"http://127.0.0.1:{port}"
        until(lambda: fetch(url + "/", password) == 200, "the dashboard answers")
        return url

    yield start
    for process in processes:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


def read(driver: object, script: str) -> object:
    """What ``script`` returns, read in one step (htmx may swap the page between reads)."""
    return driver.execute_script(script)  # type: ignore[attr-defined]


def text_of(driver: object, element_id: str) -> str:
    return read(driver, f"return document.getElementById('{element_id}').textContent.trim()")


def page_pool(driver: object) -> dict[str, dict[str, int]]:
    """The pool table's count of each state and kind."""
    cells = read(
        driver,
        "return [...document.querySelectorAll('#pool td[data-state]')]"
        ".map(c => [c.dataset.state, c.dataset.kind, c.textContent.trim()])",
    )
    counts: dict[str, dict[str, int]] = {}
    for state, kind, count in cells:  # type: ignore[attr-defined]
        counts.setdefault(state, {})[kind] = int(count)
    return counts


def page_slots(driver: object) -> dict[str, tuple[str, str | None]]:
    """Each slot row's state and sector as shown ("-" for none)."""
    rows = read(
        driver,
        "return [...document.querySelectorAll('#slots tr[data-slot]')].map(r => [r.dataset.slot,"
        " ...['state', 'sector'].map("
        "f => r.querySelector(`[data-field=${f}]`).textContent.trim())])",
    )
    return {slot: (state, None if sector == "-" else sector) for slot, state, sector in rows}  # type: ignore[attr-defined]


@needs_chromium
def test_dashboard_shows_the_cli_numbers_live(
    serve: Callable[..., str], browser: object, registered: Callable[..., SlotPool]
) -> None:
    from selenium.webdriver.common.by import By

    run("sectors", "add", "--kind", "cc", "--count", "3")
    run("deals", "add", "4", "--piece-size", "16GiB")
    run("sectors", "add", "--kind", "deal", "--deal-id", "4")
    pool = registered("hostA", [SlotPlan("PreCommit1", i, None, None, {}) for i in range(2)])
    registered("hostB", [SlotPlan("Commit2", 0, None, None, {})])
    url = serve()
    with pool.acquire("f01000-2", "PreCommit1"):
        browser.get(url + "/")  # type: ignore[attr-defined]
        stats = cli_json("pool", "stats")
        assert page_pool(browser) == stats["states"]  # type: ignore[index]
        assert int(text_of(browser, "total")) == stats["total"] == 4  # type: ignore[index]
        slots = cli_json("workers")
        assert page_slots(browser) == {
            f"{s['host']}/{s['phase']}/{s['index']}": (s["state"], s["sector"])
            for s in slots  # type: ignore[union-attr]
        }
        assert page_slots(browser)["hostA/PreCommit1/0"] == ("busy", "f01000-2")
        ratio = cli_json("ratio")
        assert f"bottleneck {ratio['bottleneck']}" in text_of(browser, "bottleneck")  # type: ignore[index]
    run("sectors", "add", "--kind", "cc", "--count", "2")  # the page refreshes by itself
    until(lambda: text_of(browser, "total") == "6", "the total refreshed")
    until(lambda: page_slots(browser)["hostA/PreCommit1/0"] == ("idle", None), "slot idle")
    assert page_pool(browser) == cli_json("pool", "stats")["states"]  # type: ignore[index]
    browser.find_element(By.ID, "sector-id").send_keys("f01000-4")  # type: ignore[attr-defined]
    browser.find_element(By.CSS_SELECTOR, "form button").click()  # type: ignore[attr-defined]
    shown = cli_json("sectors", "show", "f01000-4")
    title = until(lambda: browser.find_elements(By.ID, "sector-title"), "the sector's history")  # type: ignore[attr-defined]
    assert title[0].text.startswith("f01000-4 — Pending")  # type: ignore[index]
    rows = browser.find_elements(By.CSS_SELECTOR, "#history tr td:nth-child(3)")  # type: ignore[attr-defined]
    assert [r.text for r in rows] == [h["event"] for h in shown["history"]]  # type: ignore[index]


@pytest.mark.usefixtures("cli_env")
def test_a_non_loopback_bind_needs_a_password() -> None:
    code, out = run("web", "--host", "0.0.0.0", "--port", "1")
    assert code == 1 and out.startswith("Error: --host 0.0.0.0: not a loopback address"), out
    assert len(out.strip().splitlines()) == 1


def test_the_password_is_asked_for(serve: Callable[..., str]) -> None:
    url = serve("--password", "s3cret", password="s3cret")
    assert fetch(url + "/overview") == 401
    assert fetch(url + "/overview", "wrong") == 401
    assert fetch(url + "/overview", "s3cret") == 200
