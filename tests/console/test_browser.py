"""The console in a real headless browser: Debian's chromium, driven through Selenium by
Debian's chromedriver (/usr/bin/chromedriver; Selenium Manager is never asked, nothing is
downloaded), against a dev cluster with ``kubenpu console`` running (conftest ``setup``).

- after the seed's pod (1 NPU) and the two shares (30%, 60%) are placed, the cluster grid
  shows exactly those allocations on the recorded devices, read from the DOM
  (``data-device``, ``data-kind``, ``data-pods``, the segments' widths, the colours);
- a device marked unhealthy turns red within 5 s, without a reload (the page's script
  follows ``/events`` and swaps the content in);
- a pod that cannot fit shows on ``/pending`` with the scheduler's reason in plain words.

Screenshots of each step go to ``$KUBENPU_ARTIFACTS/console-browser`` if that is set, else
to a temporary directory; the test prints where.

Chromium refuses to run as root with its sandbox (``Running as root without --no-sandbox
is not supported``), and CI runs as root: there, and only there, ``--no-sandbox`` is
passed. ``--headless=new`` is Chromium's own headless mode; ``--disable-gpu`` because
these machines have no GPU for it to probe.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from console.cluster import Setup, wait_for

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: The stylesheet's colours as the browser computes them (console.css).
WHOLE_BLUE = "rgb(43, 108, 176)"  # --whole: #2b6cb0
UNHEALTHY_RED = "rgb(229, 62, 62)"  # --bad: #e53e3e
FREE_GREY = "rgb(226, 232, 240)"  # --free: #e2e8f0


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the screenshots go."""
    root = os.environ.get("KUBENPU_ARTIFACTS")
    if root:
        path = Path(root) / "console-browser"
        path.mkdir(parents=True, exist_ok=True)
    else:
        path = tmp_path_factory.mktemp("console-browser")
    print(f"\nconsole browser screenshots: {path}")
    return path


#: Chromium flags that keep it on loopback.
NO_NETWORK = (
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-domain-reliability",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-client-side-phishing-detection",
    "--no-first-run",
    "--no-pings",
    "--dns-prefetch-disable",
    "--proxy-server=http://127.0.0.1:9",
    "--proxy-bypass-list=127.0.0.1",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
)


@pytest.fixture(scope="module")
def browser(artifacts: Path) -> Iterator[WebDriver]:
    """Headless chromium through the system chromedriver."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} missing: run `bash hack/install-test-tools.sh` as root "
            "(Debian's chromium and chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--disable-gpu", "--window-size=1280,800", "--lang=en-US"):
        options.add_argument(arg)
    # Loopback only (the network rule): no background services, and any request that is
    # not for 127.0.0.1 goes to a proxy on a refusing loopback port, so it fails at once
    # without a DNS lookup; no name but localhost resolves.
    for arg in NO_NETWORK:
        options.add_argument(arg)
    if os.geteuid() == 0:
        options.add_argument("--no-sandbox")  # see the module docstring
    service = Service(str(CHROMEDRIVER), log_output=str(artifacts / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


#: The grid's devices as drawn, read in one go (the page's script may swap the content in
#: between two reads of single elements).
_CELLS_JS = """
return Array.from(document.querySelectorAll("tr[data-node] span.d[data-device]")).map(c => {
  const width = c.getBoundingClientRect().width || 1;
  return {
    device: c.dataset.device, kind: c.dataset.kind, pods: c.dataset.pods,
    segments: Array.from(c.querySelectorAll("i")).map(
      i => Math.round(100 * i.getBoundingClientRect().width / width) / 100),
    colour: getComputedStyle(c).backgroundColor,
  };
});
"""


def _cells(driver: WebDriver) -> dict[str, dict[str, object]]:
    """The grid's devices as drawn: id -> kind, pods, segment widths (fractions of the
    cell), background colour."""
    return {c.pop("device"): c for c in driver.execute_script(_CELLS_JS)}


def _text(driver: WebDriver, selector: str) -> str:
    """The text of the first element ``selector`` finds ("" if none), read in one go."""
    return str(
        driver.execute_script(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
            selector,
        )
    )


def _live(driver: WebDriver) -> bool:
    return driver.find_element(By.ID, "live").text == "live"


def _shot(driver: WebDriver, artifacts: Path, name: str) -> None:
    path = artifacts / f"{name}.png"
    assert driver.save_screenshot(str(path)), path
    print(f"screenshot: {path}")


def test_grid_shows_the_placements_and_a_device_turning_red_live(
    setup: Setup, browser: WebDriver, artifacts: Path
) -> None:
    browser.get(setup.base + "/")
    wait_for("the page's event stream", lambda: _live(browser), timeout=10)
    devices = setup.inventory()
    assert len(devices) == 4
    # A marker a reload would wipe out: every change below must arrive without one.
    browser.execute_script("window.kubenpuNoReload = 1;")

    whole, shared = setup.place_seed_pods()
    expected = {d: {"kind": "free", "pods": "", "segments": []} for d in devices}
    expected[whole] = {"kind": "whole", "pods": "default/test-npu-pod", "segments": []}
    # One segment per pod, widest first, each as wide as its share (the cell's 1 px borders
    # and the segments' 1 px separators cost a little).
    expected[shared] = {
        "kind": "shared",
        "pods": "default/shared-npu-60 default/shared-npu-30",
        "segments": [0.6, 0.3],
    }

    def drawn() -> bool:
        cells = _cells(browser)
        if set(cells) != set(expected):
            return False
        for device, want in expected.items():
            got = cells[device]
            if (got["kind"], got["pods"]) != (want["kind"], want["pods"]):
                return False
            segments = got["segments"]
            assert isinstance(segments, list)
            if len(segments) != len(want["segments"]) or any(
                abs(s - w) > 0.08 for s, w in zip(segments, want["segments"], strict=True)
            ):
                return False
        return True

    wait_for("the grid to draw the seed's placements", drawn, timeout=15)
    cells = _cells(browser)
    assert cells[whole]["colour"] == WHOLE_BLUE
    for device in set(devices) - {whole, shared}:
        assert cells[device]["colour"] == FREE_GREY, (device, cells[device])
    totals = browser.execute_script(
        "const t = {}; document.querySelectorAll('[data-total]')"
        ".forEach(e => { t[e.dataset.total] = e.innerText; }); return t;"
    )
    assert totals == {
        "whole": "1 whole",
        "shared": "1 shared",
        "free": "2 free",
        "unhealthy": "0 unhealthy",
    }
    assert _text(browser, "#allocation") == "47.5%"  # 1 + 0.3 + 0.6 of 4
    assert browser.execute_script("return window.kubenpuNoReload;") == 1
    _shot(browser, artifacts, "1-cluster-placed")

    # A free device turns unhealthy: red within 5 s, the page not reloaded.
    sick = next(d for d in devices if d not in (whole, shared))
    setup.dev.set_device_health(setup.node, sick, healthy=False)
    started = time.monotonic()

    def red() -> bool:
        cell = _cells(browser).get(sick, {})
        return cell.get("kind") == "unhealthy" and cell.get("colour") == UNHEALTHY_RED

    wait_for(f"{sick} drawn red", red, timeout=10, interval=0.05)
    elapsed = time.monotonic() - started
    assert elapsed < 5, elapsed
    print(f"{sick} turned red {elapsed:.2f} s after its health marker")
    assert browser.execute_script("return window.kubenpuNoReload;") == 1
    assert _live(browser)
    cells = _cells(browser)
    assert (cells[whole]["kind"], cells[shared]["kind"]) == ("whole", "shared")
    assert _text(browser, '[data-total="unhealthy"]') == "1 unhealthy"
    _shot(browser, artifacts, "2-cluster-unhealthy")

    # The node page draws the same devices.
    browser.get(f"{setup.base}/nodes/{setup.node}")
    rows = browser.execute_script(
        "const k = {}; document.querySelectorAll('table.devices tr[data-device]')"
        ".forEach(r => { k[r.dataset.device] = r.dataset.kind; }); return k;"
    )
    assert rows == {
        **{d: "free" for d in devices},
        whole: "whole",
        shared: "shared",
        sick: "unhealthy",
    }
    _shot(browser, artifacts, "3-node")


def test_pending_pod_shows_its_reason(setup: Setup, browser: WebDriver, artifacts: Path) -> None:
    setup.place_seed_pods()  # a no-op after the test above: 4 whole NPUs cannot fit
    browser.get(setup.base + "/pending")
    wait_for("the page's event stream", lambda: _live(browser), timeout=10)
    setup.run_npu_pod("too-big", 4)

    def reason() -> str:
        return _text(browser, 'tr[data-pod="default/too-big"] td.reason')

    text = wait_for("too-big's reason on /pending", lambda: "too few free" in reason(), timeout=30)
    assert text
    assert "4 whole NPUs" in _text(browser, 'tr[data-pod="default/too-big"]')
    assert "1 node: too few free whole NPUs" in reason(), reason()
    _shot(browser, artifacts, "4-pending")
