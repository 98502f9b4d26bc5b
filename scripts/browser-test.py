#!/usr/bin/env python3
"""The demo page in a real browser (make browser-test).

Starts nats-server and `notify serve` on free ports, drives headless
Chromium through chromedriver (W3C WebDriver over HTTP, standard library
only), and checks that the page loads, shows a notification published while
it is open with its webhook delivery status (sent, to a receiver run by
the test), and that the unread badge drops after "Mark all read". Saves a
screenshot to .build/demo-page.png. Exits non-zero on any failure.
"""
import base64
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTIFY = os.path.join(ROOT, ".build", "debug", "notify")
SCREENSHOT = os.path.join(ROOT, ".build", "demo-page.png")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout=20, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


class WebDriver:
    """The few WebDriver commands the test needs."""

    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"
        capabilities = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": shutil.which("chromium"), "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1000,800"]},
        }}}
        self.session = self.call("POST", "/session", capabilities)["sessionId"]

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else (b"{}" if method == "POST" else None)
        request = urllib.request.Request(self.base + path, data=data, method=method, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.load(response)["value"]

    def command(self, method, path, body=None):
        return self.call(method, f"/session/{self.session}{path}", body)

    def open(self, url):
        self.command("POST", "/url", {"url": url})

    def element(self, css):
        found = self.command("POST", "/element", {"using": "css selector", "value": css})
        return next(iter(found.values()))

    def elements(self, css):
        return [next(iter(e.values())) for e in self.command("POST", "/elements", {"using": "css selector", "value": css})]

    def text(self, css):
        return self.command("GET", f"/element/{self.element(css)}/text")

    def click(self, css):
        self.command("POST", f"/element/{self.element(css)}/click")

    def type(self, css, text):
        element = self.element(css)
        self.command("POST", f"/element/{element}/clear")
        self.command("POST", f"/element/{element}/value", {"text": text})

    def screenshot(self, path):
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.command("GET", "/screenshot")))

    def quit(self):
        try:
            self.command("DELETE", "")
        except Exception:
            pass


class WebhookReceiver(BaseHTTPRequestHandler):
    """Answers every POST 200 and counts them."""
    received = 0

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        WebhookReceiver.received += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def request_json(method, url, body, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def main():
    work = tempfile.mkdtemp(prefix="notify-browser-")
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), WebhookReceiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    processes = []
    driver = None
    try:
        nats_port, http_port, driver_port = free_port(), free_port(), free_port()
        processes.append(subprocess.Popen(
            ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(nats_port), "-sd", os.path.join(work, "js")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        env = dict(os.environ, NATS_URL=f"nats://127.0.0.1:{nats_port}", DATA_DIR=os.path.join(work, "data"),
                   PORT=str(http_port), HOST="127.0.0.1", JWT_SECRET="browser-test-secret-of-32-bytes!!",
                   NATS_STREAM_STORAGE="memory", DELIVERY_CHANNELS="webhook", DELIVERY_BACKOFF="200ms")
        log = open(os.path.join(work, "serve.log"), "w")
        time.sleep(0.5)
        processes.append(subprocess.Popen([NOTIFY, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT))
        wait_for(lambda: "gateway listening" in open(os.path.join(work, "serve.log")).read(), what="notify serve")
        processes.append(subprocess.Popen(["chromedriver", f"--port={driver_port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(lambda: _answers(driver_port), what="chromedriver")

        # Ana's webhook, set through the API the way an app would.
        base = f"http://127.0.0.1:{http_port}"
        token = request_json("POST", base + "/dev/token", {"user": "ana"})["token"]
        request_json("PUT", base + "/v1/channels", {"webhook": {"url": f"http://127.0.0.1:{receiver.server_port}/hook"}}, token)

        driver = WebDriver(driver_port)
        driver.open(f"http://127.0.0.1:{http_port}/")
        assert driver.text("h1").startswith("notify"), "the page loads"
        driver.type("#user", "ana")
        driver.click("#connect")
        wait_for(lambda: "connected as ana" in driver.text("#status"), what="the live connection")

        # A notification published while the page is open.
        event = json.dumps({"owner": "ana", "trigger_user": "ben", "username": "Ben from the browser test",
                            "action": 1, "resource_type": "POST", "resource_id": "browser-post",
                            "excerpt": "Hello from headless Chromium", "created_at": int(time.time())})
        subprocess.run([NOTIFY, "publish", "notifications.post.like", event], env=env, check=True, capture_output=True)
        wait_for(lambda: "Ben from the browser test" in driver.text("#feed"), what="the published notification")
        wait_for(lambda: driver.text("#badge") == "1", what="the unread badge to show 1")
        assert driver.elements("#feed li.unread"), "the notification is shown as unread"
        wait_for(lambda: "webhook: sent" in driver.text("#feed"), what="the webhook delivery status on the page")
        assert WebhookReceiver.received == 1, f"the webhook got {WebhookReceiver.received} requests"

        driver.click("#read")
        wait_for(lambda: driver.text("#badge") == "0", what="the badge to drop after mark-read")
        wait_for(lambda: not driver.elements("#feed li.unread"), what="the notification to show as read")
        # A second like on the same post folds into the notification
        # (aggregation, on by default): one entry, unread again.
        event = json.dumps({"owner": "ana", "trigger_user": "cy", "username": "Cy", "action": 1, "resource_type": "POST",
                            "resource_id": "browser-post", "created_at": int(time.time())})
        subprocess.run([NOTIFY, "publish", "notifications.post.like", event], env=env, check=True, capture_output=True)
        wait_for(lambda: "Cy and 1 other" in driver.text("#feed"), what="the folded notification")
        wait_for(lambda: driver.text("#badge") == "1", what="the badge to show the group unread again")
        assert len(driver.elements("#feed li")) == 1, "one entry for the group"
        os.makedirs(os.path.dirname(SCREENSHOT), exist_ok=True)
        driver.screenshot(SCREENSHOT)
        print(f"browser test passed: page loaded, live notification shown with its webhook delivery (sent), badge 1 → 0 after mark-read, a second like folded into it (unread again); screenshot {SCREENSHOT}")
        return 0
    except Exception as error:
        print(f"browser test failed: {error}", file=sys.stderr)
        serve_log = os.path.join(work, "serve.log")
        if os.path.exists(serve_log):
            print(open(serve_log).read()[-3000:], file=sys.stderr)
        return 1
    finally:
        if driver:
            driver.quit()
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        receiver.shutdown()
        shutil.rmtree(work, ignore_errors=True)


def _answers(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=1) as response:
            return json.load(response)["value"].get("ready", False)
    except Exception:
        return False


if __name__ == "__main__":
    sys.exit(main())
