"""Regenerate the console screenshots of the README (docs/console-*.png).

    python docs/screenshots.py            # needs playwright (the [test] extra) and the system Chromium

Starts `tokensvc serve` on 127.0.0.1 with a throwaway SQLite database and keys directory, fills
a demo service through the REST API, then drives the system Chromium through the console: the
sign-in form, a searched users list, and a user's page. Everything is removed at the end.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
SIZE = {"width": 1200, "height": 820}
NAMES = ["alice", "amara", "anders", "aoife", "bob", "carmen", "chen", "dmitri", "elif", "farah", "gustavo",
         "hana", "ines", "jamal", "kenji", "lena", "mateo", "nadia", "olu", "priya", "quentin", "rosa"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(tmp: Path, account: tuple[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = _port()
    env = dict(os.environ, TOKENSVC_DATABASE_URL=f"sqlite:///{tmp / 'demo.db'}", TOKENSVC_KEYS_DIR=str(tmp / "keys"),
               TOKENSVC_PORT=str(port), TOKENSVC_HOST="127.0.0.1", TOKENSVC_ACCOUNT_SID=account[0],
               TOKENSVC_AUTH_TOKEN=account[1], PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "tokensvc.cli", "serve"], env=env, cwd=tmp,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("tokensvc serve did not start")


def _fill(base: str, auth: tuple[str, str]) -> tuple[str, str]:
    """A demo service with users; (service SID, the SID of the user shown)."""
    with httpx.Client(base_url=base, auth=auth, timeout=10) as http:
        svc = http.post("/v2/Services", data={"FriendlyName": "Demo chat"}).json()["sid"]
        http.post(f"/v2/Services/{svc}", data={"ReachabilityEnabled": "true"})
        shown = ""
        for i, name in enumerate(NAMES):
            data = {"Identity": f"{name}@example.com", "FriendlyName": name.capitalize()}
            if name == "amara":
                data["Attributes"] = '{"plan": "team", "locale": "en-GB"}'
            user = http.post(f"/v2/Services/{svc}/Users", data=data).json()
            if name == "amara":
                shown = user["sid"]
            if i % 3 == 0:
                http.post(f"/v2/Services/{svc}/Tokens", data={"Identity": f"{name}-{i}@example.org"})
        cred = http.post("/v2/Credentials", data={"Type": "fcm", "FriendlyName": "android", "Secret": "demo"}).json()
        http.post(f"/v2/Services/{svc}/Bindings", data={"Identity": "amara@example.com", "BindingType": "fcm",
                                                         "Address": "demo-device-token", "CredentialSid": cred["sid"],
                                                         "Endpoint": "amara-pixel"})
        for unique in ("general", "support"):
            ch = http.post(f"/v2/Services/{svc}/Channels", data={"UniqueName": unique, "FriendlyName": unique}).json()
            http.post(f"/v2/Services/{svc}/Channels/{ch['sid']}/Members", data={"Identity": "amara@example.com"})
    return svc, shown


def main() -> int:
    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("no chromium on PATH (apt-get install chromium)")
    account = ("AC" + secrets.token_hex(16), secrets.token_urlsafe(24))
    tmp = Path(tempfile.mkdtemp(prefix="tokensvc-shots-"))
    proc, base = _serve(tmp, account)
    try:
        svc, user = _fill(base, account)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium)
            page = browser.new_page(viewport=SIZE, device_scale_factor=1)
            page.goto(f"{base}/console/sign-in")
            page.fill("#account_sid", account[0])
            page.screenshot(path=str(DOCS / "console-sign-in.png"))
            page.fill("#auth_token", account[1])
            page.press("#auth_token", "Enter")
            page.wait_for_url("**/console/services")
            page.goto(f"{base}/console/services/{svc}/users?prefix=a")
            page.screenshot(path=str(DOCS / "console-users.png"), full_page=True)
            page.goto(f"{base}/console/services/{svc}/users/{user}")
            page.screenshot(path=str(DOCS / "console-user.png"), full_page=True)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    for name in ("console-sign-in.png", "console-users.png", "console-user.png"):
        print(DOCS / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
