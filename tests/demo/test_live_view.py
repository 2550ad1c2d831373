"""The live view in real headless Chromium, against a real 3-node cluster.

Checks that the page renders live data through the public API only: the
book ladder and recent trades from the WebSocket, the member table from
every member's /v1/cluster, and that a leader change (kill -9 of the
leader) shows up in the member table.
"""

from __future__ import annotations

import shutil
import time

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
        "--window-size=1400,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


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


def test_book_trades_and_members_render_live_data_and_follow_a_leader_change(cluster, browser):
    leader = cluster.wait_for_leader(30)
    page_node = next(m for m in cluster.spec.members if m.node_id != leader)
    alice, bob = cluster.key_for("alice"), cluster.key_for("bob")
    base = f"http://{page_node.http}"

    browser.get(f"{base}/?symbol={SYMBOL}")
    wait = WebDriverWait(browser, 20, poll_frequency=0.1)
    wait.until(lambda d: d.find_element(By.ID, "ws-state").text == "live")
    wait.until(lambda d: len(table_rows(d, "members")) == 3)

    # orders placed after the page subscribed arrive as WebSocket deltas
    for side, price, qty, token in (
        ("BUY", 49_900, 5, alice),
        ("SELL", 50_100, 7, alice),
        ("BUY", 50_100, 2, bob),  # crosses: a trade of 2 at 50,100
    ):
        status, body = http(
            "POST",
            f"{base}/v1/orders",
            token,
            {"symbol": SYMBOL, "side": side, "price": price, "quantity": qty},
        )
        assert status == 200, body

    wait.until(lambda d: ["49,900", "5"] in table_rows(d, "bids"))
    wait.until(lambda d: ["50,100", "5"] in table_rows(d, "asks"))  # 7 resting - 2 traded
    wait.until(lambda d: any(r[1:] == ["50,100", "2", "BUY"] for r in table_rows(d, "trades")))
    assert "spread 200" in browser.find_element(By.ID, "spread").text

    members = table_rows(browser, "members")
    assert len(members) == 3
    assert leader_row_id(browser) == str(leader)
    for row in members:  # every member answered with its own term and indexes
        assert row[2].isdigit() and row[3].replace(",", "").isdigit(), row

    # kill -9 the leader: the table shows the new one once the cluster has it
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
