"""Check the Kirin connection form's TLS switch in a real browser, as a new user would use it.

Starts an ``airflow api-server`` on a temporary ``AIRFLOW_HOME`` (SQLite, the simple auth manager
with every user an admin), opens *Admin -> Connections -> Add Connection* in headless Chromium
(Debian's ``chromium`` package, driven by Playwright through its executable path), picks the
**Kirin** type, fills the base URL and key, switches **Skip TLS verification** on and off again (a
form that looks untouched), saves, reads the stored extra back with ``airflow connections get``,
and asks the provider what it makes of it. Screenshots go to ``--out``.

It passes (exit 0) only if the form draws no ``verify_ssl`` switch, the switch starts off, and the
saved connection keeps TLS verification on; then it does the same with the switch left on and
checks that verification is off (the switch does what it says). Needs ``apt-get install chromium``
and ``pip install playwright``; takes about a minute::

    .venv/bin/python scripts/check_tls_switch.py --out /tmp/tls-form
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from airflow_helpers import (  # noqa: E402
    AirflowHome,
    api_server_settings,
    free_port,
    http_ok,
    migrate_template,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


def save_from_form(page, url: str, conn_id: str, clicks: int, out: Path) -> None:  # type: ignore[no-untyped-def]
    """Add a Kirin connection in the form, clicking the TLS switch ``clicks`` times, and save it."""
    page.goto(f"{url}/connections", timeout=60_000)
    page.get_by_role("button", name="Add Connection").click()
    page.locator("input[name=connection_id]").fill(conn_id)
    kind = page.locator("input[aria-haspopup=true]").first
    kind.click()
    kind.fill("Kirin")
    page.get_by_text("Kirin", exact=True).last.wait_for(timeout=10_000)
    page.keyboard.press("Enter")
    page.locator("input[name=host]").fill("https://api.example.com")
    page.locator("input[name=password]").fill("k-ui-check-not-a-secret")
    page.get_by_text("Extra Fields", exact=True).click()
    switch = page.locator("input[name=element_skip_tls_verification]")
    switch.wait_for(state="attached", timeout=10_000)
    if page.locator("input[name=element_verify_ssl]").count():
        raise SystemExit("FAIL: the form still draws a verify_ssl switch")
    if switch.is_checked():
        raise SystemExit("FAIL: 'Skip TLS verification' is drawn on before anyone touched it")
    control = switch.locator("xpath=..")  # the switch's label: what a person clicks
    page.screenshot(path=str(out / f"{conn_id}-before.png"), full_page=True)
    for _ in range(clicks):
        control.click()
        page.wait_for_timeout(200)
    print(f"{conn_id}: switch clicked {clicks} time(s), drawn {'on' if switch.is_checked() else 'off'}")
    page.screenshot(path=str(out / f"{conn_id}-switch.png"), full_page=True)
    page.get_by_text("Extra Fields JSON", exact=True).click()
    page.screenshot(path=str(out / f"{conn_id}-json.png"), full_page=True)
    page.get_by_role("button", name="Save").click()
    page.wait_for_timeout(1500)


def stored(home: AirflowHome, conn_id: str) -> dict:  # type: ignore[type-arg]
    result = home.cli("connections", "get", conn_id, "-o", "json")
    if result.returncode != 0:
        raise SystemExit(f"FAIL: the connection was not saved: {result.stderr[-2000:]}")
    (conn,) = json.loads(result.stdout)
    return conn


def saved_extra(conn: dict) -> dict:  # type: ignore[type-arg]
    """The extra as stored: from the URI's ``__extra__`` (JSON). The CLI's ``extra_dejson`` column
    prints every value through ``str()``, so a stored ``false`` reads ``"False"`` there."""
    from urllib.parse import parse_qs, urlsplit

    (text,) = parse_qs(urlsplit(conn["get_uri"]).query)["__extra__"]
    return dict(json.loads(text))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "kirin-tls-form")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"FAIL: {CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    from airflow_provider_kirin.core.config import KirinConnectionConfig

    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="kirin-tls-form-"))
    port = free_port()
    home = AirflowHome.create(
        work / "home",
        migrate_template(work / "template"),
        dags_folder=work / "dags",
        settings=api_server_settings(port),
    )
    (work / "dags").mkdir()
    url = f"http://127.0.0.1:{port}"
    failures = []
    try:
        server = home.start("api-server", "api-server")
        deadline = time.monotonic() + 180
        while not http_ok(f"{url}/api/v2/version"):
            if not server.alive or time.monotonic() > deadline:
                raise SystemExit(f"FAIL: the api-server did not start:\n{server.tail()}")
            time.sleep(0.5)
        import airflow

        print(f"Airflow {airflow.__version__} api-server on {url}")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 2000})
            for conn_id, clicks, expect_verify in (("kirin_on_off", 2, True), ("kirin_on", 1, False)):
                save_from_form(page, url, conn_id, clicks, args.out)
                conn = stored(home, conn_id)
                extra = saved_extra(conn)
                from airflow.sdk import Connection

                config = KirinConnectionConfig.from_connection(
                    Connection(conn_id=conn_id, conn_type="kirin", host=conn["host"], password="x"), extra
                )
                verdict = "ok" if config.verify_ssl is expect_verify else "FAIL"
                shown = {k: v for k, v in extra.items() if v is not None}
                column = conn["extra_dejson"].get("skip_tls_verification")
                print(
                    f"{conn_id}: stored extra (non-null) {json.dumps(shown)}; CLI column shows "
                    f"{column!r} -> verify TLS {config.verify_ssl} [{verdict}]"
                )
                if verdict != "ok":
                    failures.append(conn_id)
            browser.close()
    finally:
        home.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    print(f"screenshots in {args.out}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
