"""The live view in real headless Chromium, against a real 3-node cluster.

The page is opened through a TCP forwarder on another port (what ``kubectl
port-forward`` or a proxy does), and checked to render live data through the
public API of that one node only: every request the browser made went to the
page's own origin (the member table comes from ``/v1/cluster/members``, which
the node gathers server-side). It checks prices in the symbol's units (the
``price_scale`` of ``/v1/symbols``), the book ladder and recent trades from
the WebSocket, candles from ``/v1/analytics``, the orders/s chart from the
``stats`` channel, the activity feed (orders, trades, leader changes, alerts),
that the charts are on screen at 1400x1000, and that a leader change (kill -9
of the leader) shows up in the member table and the feed. The API page at
``/api`` renders the OpenAPI document from packaged files.

``EXCHANGE_SCREENSHOT_DIR=docs`` saves a screenshot of the page there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from demo_support import http

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER):
    pytest.skip(
        "headless Chromium and chromedriver are not installed (scripts/system-deps.sh installs them as root)",
        allow_module_level=True,
    )
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

SYMBOL = "BTC-USD"
WIDTH, HEIGHT = 1400, 1000


@pytest.fixture
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        "--disable-quic",
        f"--window-size={WIDTH},{HEIGHT}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    # the viewport, not the window, must be 1400x1000
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    driver.set_window_size(2 * WIDTH - inner[0], 2 * HEIGHT - inner[1])
    yield driver
    driver.quit()


class Forwarder:
    """A TCP port forward to one node (what ``kubectl port-forward`` does)."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.closed = True
        self.listener.close()


@pytest.fixture
def forward_to() -> Iterator:
    made: list[Forwarder] = []

    def make(target: str) -> Forwarder:
        made.append(Forwarder(target))
        return made[-1]

    yield make
    for f in made:
        f.close()


# The page re-renders its tables several times a second: read them in one
# script call so a row cannot go stale between two WebDriver round trips.
def table_rows(driver, table_id: str) -> list[list[str]]:
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])]"
        ".map(r => [...r.cells].map(c => c.innerText.trim()))",
        f"#{table_id} tbody tr",
    )


def member_roles(driver) -> dict[str, str]:
    return driver.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#members tbody tr')]"
        ".map(r => [r.dataset.id, r.dataset.role]))"
    )


def leader_row_id(driver) -> str | None:
    leaders = [i for i, role in member_roles(driver).items() if role == "leader"]
    return leaders[0] if len(leaders) == 1 else None


def feed(driver) -> list[tuple[str, str]]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#activity li')]"
        ".map(li => [li.dataset.kind, li.querySelector('.m').textContent])"
    )


def on_screen(driver, element_id: str) -> bool:
    return driver.execute_script(
        "const r = document.getElementById(arguments[0]).getBoundingClientRect();"
        "return r.height > 80 && r.width > 300 && r.top >= 0 && r.bottom <= window.innerHeight"
        " && r.right <= window.innerWidth",
        element_id,
    )


def test_live_view_renders_units_candles_throughput_and_feed_and_follows_a_leader_change(
    cluster, browser, forward_to
):
    leader = cluster.wait_for_leader(30)
    page_node = next(m for m in cluster.spec.members if m.node_id != leader)
    alice, bob = cluster.key_for("alice"), cluster.key_for("bob")
    base = f"http://{page_node.http}"
    forward = forward_to(page_node.http)
    page = f"http://localhost:{forward.port}"  # another origin than any member's address

    browser.get(f"{page}/?symbol={SYMBOL}")
    wait = WebDriverWait(browser, 20, poll_frequency=0.1)
    wait.until(lambda d: d.find_element(By.ID, "ws-state").text == "live")
    wait.until(lambda d: len(table_rows(d, "members")) == 3)
    wait.until(lambda d: any(kind == "leader" for kind, _ in feed(d)))

    # orders placed after the page subscribed arrive as WebSocket deltas
    for side, price, qty, token in (
        ("BUY", 49_900, 5, alice),
        ("SELL", 50_100, 7, alice),
        ("BUY", 50_100, 2, bob),  # crosses: a trade of 2 at 501.00
    ):
        status, body = http(
            "POST",
            f"{base}/v1/orders",
            token,
            {"symbol": SYMBOL, "side": side, "price": price, "quantity": qty},
        )
        assert status == 200, body

    # prices in the symbol's units: /v1/symbols says 100 units per dollar
    wait.until(lambda d: ["499.00", "5"] in table_rows(d, "bids"))
    wait.until(lambda d: ["501.00", "5"] in table_rows(d, "asks"))  # 7 resting - 2 traded
    wait.until(lambda d: any(r[1:] == ["501.00", "2", "BUY"] for r in table_rows(d, "trades")))
    assert "spread 2.00" in browser.find_element(By.ID, "spread").text

    # activity feed: the committed orders and the trade
    wait.until(lambda d: any(k == "orders" and "orders committed" in m for k, m in feed(d)))
    wait.until(lambda d: any(k == "trade" and "@ 501.00" in m for k, m in feed(d)))
    # candles from /v1/analytics, and the orders/s chart from the stats channel
    wait.until(lambda d: int(d.find_element(By.ID, "candles").get_attribute("data-count")) >= 1)
    wait.until(lambda d: int(d.find_element(By.ID, "chart").get_attribute("data-points") or 0) >= 3)
    assert "orders/s" in browser.find_element(By.ID, "rate-now").text
    # the layout keeps both charts and the book on screen at 1400x1000
    for element_id in ("chart", "candles", "members", "activity"):
        assert on_screen(browser, element_id), element_id

    members = table_rows(browser, "members")
    assert len(members) == 3
    assert leader_row_id(browser) == str(leader)
    for row in members:  # every member answered with its own term and indexes
        assert row[2].isdigit() and row[3].replace(",", "").isdigit(), row

    # the browser only ever talked to the page's own origin (through the forward)
    urls = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert urls and all(u.startswith(page) for u in urls), urls

    # no script error on the page (a failed render would leave stale panels behind)
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors

    if os.environ.get("EXCHANGE_SCREENSHOT_DIR"):
        browser.save_screenshot(
            os.path.join(os.environ["EXCHANGE_SCREENSHOT_DIR"], "live-view.png")
        )

    # kill -9 the leader: the table and the feed show the new one once the cluster has it
    cluster.kill(leader)
    survivors = [m.node_id for m in cluster.spec.members if m.node_id != leader]
    new_leader = cluster.wait_for_leader(30, among=survivors)
    elected = time.monotonic()
    WebDriverWait(browser, 10, poll_frequency=0.05).until(
        lambda d: leader_row_id(d) == str(new_leader)
    )
    shown_after = time.monotonic() - elected
    print(f"live view showed the new leader {shown_after:.2f} s after the cluster reported it")
    WebDriverWait(browser, 10, poll_frequency=0.05).until(
        lambda d: member_roles(d).get(str(leader)) == "unreachable"
    )
    wait.until(
        lambda d: (
            sum(1 for k, _ in feed(d) if k == "leader") >= 2
            and any(k == "alert" and "unreachable" in m for k, m in feed(d))
        )
    )
    new_name = next(r[0] for r in table_rows(browser, "members") if r[1] == "leader")
    assert any(k == "leader" and f"leader is {new_name}" in m for k, m in feed(browser))


def test_api_page_renders_every_operation_from_packaged_files(cluster, browser):
    node = cluster.spec.members[0]
    browser.get(f"http://{node.http}/api")
    wait = WebDriverWait(browser, 20, poll_frequency=0.1)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".op-block")) > 0)
    _, doc = http("GET", f"http://{node.http}/openapi.json")
    documented = {
        op["operationId"]
        for item in doc["paths"].values()
        for key, op in item.items()
        if key != "parameters"
    }
    shown = set(
        browser.execute_script(
            "return [...document.querySelectorAll('.op-block')].map(e => e.dataset.operation)"
        )
    )
    assert shown == documented
    urls = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert all(u.startswith(f"http://{node.http}/") for u in urls), urls  # no CDN
    text = browser.find_element(By.ID, "websocket-messages").text
    assert "WebSocket" in text
