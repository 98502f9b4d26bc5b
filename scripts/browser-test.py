#!/usr/bin/env python3
"""The demo page in a real browser (make browser-test).

Starts nats-server and `notify serve` on free ports, drives headless
Chromium through chromedriver (W3C WebDriver over HTTP, standard library
only), and checks that the page loads, shows a notification published while
it is open with its webhook delivery status (sent, to a receiver run by
the test), and that the unread badge drops after "Mark all read".

Then Web Push, end to end through Chromium's real Push API, offline:
scripts/fake-fcm.py stands in for Google's push service (Chromium's GCM
check-in, registration and MCS connection are pointed at it by flags). The
test grants the notifications permission, clicks "Enable push" (the page
subscribes and stores the subscription with notify), moves the stored
subscription's https://jmt17.google.com/fcm/send/<token> endpoint to the
fake's local one (standing in for the network between notify and Google),
publishes one more event and waits until the fake accepted notify's push
(aes128gcm, VAPID signature and audience verified), Chromium decrypted it
and the page's service worker showed it (title, tag = the notification id),
and the page lists it as "webpush: sent".

Saves a screenshot to .build/demo-page.png. Exits non-zero on any failure.
Needs the `cryptography` package (for the fake push service).
"""
import base64
import importlib.util
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
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTIFY = os.path.join(ROOT, ".build", "debug", "notify")
SCREENSHOT = os.path.join(ROOT, ".build", "demo-page.png")
PUSH_USERNAME = "Dee from the push test"


def load_fake_fcm():
    """scripts/fake-fcm.py (a dash in the name: no plain import), without
    leaving a scripts/__pycache__ behind."""
    spec = importlib.util.spec_from_file_location("fake_fcm", os.path.join(ROOT, "scripts", "fake-fcm.py"))
    module = importlib.util.module_from_spec(spec)
    writes_bytecode, sys.dont_write_bytecode = sys.dont_write_bytecode, True
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = writes_bytecode
    return module


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

    def __init__(self, port, extra_args=()):
        self.base = f"http://127.0.0.1:{port}"
        capabilities = {"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": shutil.which("chromium"), "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1000,800",
                *extra_args]},
        }}}
        self.session = self.call("POST", "/session", capabilities)["sessionId"]

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else (b"{}" if method == "POST" else None)
        request = urllib.request.Request(self.base + path, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)["value"]
        except urllib.error.HTTPError as error:
            value = json.load(error).get("value", {})
            raise AssertionError(f"WebDriver {method} {path}: {value.get('error')}: {str(value.get('message'))[:300]}") from None

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

    def execute_async(self, script, *args, timeout=10):
        """Runs script with args and a done callback as its last argument."""
        self.command("POST", "/timeouts", {"script": timeout * 1000})
        return self.command("POST", "/execute/async", {"script": script, "args": list(args)})

    def cdp(self, cmd, params):
        """A Chrome DevTools Protocol command, through chromedriver."""
        return self.command("POST", "/goog/cdp/execute", {"cmd": cmd, "params": params})

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


def request_json(method, url, body=None, token=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def main():
    work = tempfile.mkdtemp(prefix="notify-browser-")
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), WebhookReceiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    processes = []
    driver = None
    fcm = None
    try:
        fcm = load_fake_fcm().FakeFCM()
        vapid = dict(line.split("=", 1) for line in subprocess.run(
            [NOTIFY, "webpush-keys"], check=True, capture_output=True, text=True).stdout.split())
        nats_port, http_port, driver_port = free_port(), free_port(), free_port()
        processes.append(subprocess.Popen(
            ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(nats_port), "-sd", os.path.join(work, "js")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        env = dict(os.environ, NATS_URL=f"nats://127.0.0.1:{nats_port}", DATA_DIR=os.path.join(work, "data"),
                   PORT=str(http_port), HOST="127.0.0.1", JWT_SECRET="browser-test-secret-of-32-bytes!!",
                   NATS_STREAM_STORAGE="memory", DELIVERY_CHANNELS="webhook,webpush", DELIVERY_BACKOFF="200ms",
                   VAPID_PRIVATE_KEY=vapid["VAPID_PRIVATE_KEY"], VAPID_SUBJECT="mailto:ops@example.com")
        log = open(os.path.join(work, "serve.log"), "w")
        time.sleep(0.5)
        processes.append(subprocess.Popen([NOTIFY, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT))
        wait_for(lambda: "gateway listening" in open(os.path.join(work, "serve.log")).read(), what="notify serve")
        # Chromium's profile and singleton-socket directories go under the
        # work directory (removed at the end), not straight into /tmp.
        processes.append(subprocess.Popen(["chromedriver", f"--port={driver_port}"], env=dict(os.environ, TMPDIR=work),
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_for(lambda: _answers(driver_port), what="chromedriver")

        # Ana's webhook, set through the API the way an app would.
        base = f"http://127.0.0.1:{http_port}"
        token = request_json("POST", base + "/dev/token", {"user": "ana"})["token"]
        request_json("PUT", base + "/v1/channels", {"webhook": {"url": f"http://127.0.0.1:{receiver.server_port}/hook"}}, token)

        # Chromium's GCM client talks to the fake push service (whose MCS
        # certificate is self-signed); nothing else in the run uses TLS.
        driver = WebDriver(driver_port, fcm.chromium_flags + ["--ignore-certificate-errors"])
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

        push_id = check_web_push(driver, fcm, base, token, env, vapid["VAPID_PUBLIC_KEY"])
        os.makedirs(os.path.dirname(SCREENSHOT), exist_ok=True)
        driver.screenshot(SCREENSHOT)
        print("browser test passed: page loaded, live notification shown with its webhook delivery (sent), "
              "badge 1 → 0 after mark-read, a second like folded into it (unread again); Web Push through "
              "Chromium's real Push API: subscribed via \"Enable push\", notify's push accepted by the fake FCM "
              f"(aes128gcm, VAPID signature and aud verified), decrypted and shown by the service worker "
              f"(tag {push_id}), page shows webpush: sent; screenshot {SCREENSHOT}")
        return 0
    except Exception as error:
        print(f"browser test failed: {error}", file=sys.stderr)
        if fcm:
            print("fake FCM: " + json.dumps({"registrations": fcm.registrations(), "pushes": fcm.pushes()}, indent=1),
                  *fcm.log, sep="\n", file=sys.stderr)
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
        if fcm:
            fcm.close()
        shutil.rmtree(work, ignore_errors=True)


def check_web_push(driver, fcm, base, token, env, vapid_public_key):
    """Subscribes the page, routes its subscription to the fake push
    service, publishes an event and follows it to the service worker's
    notification. Returns the notification's id."""
    driver.cdp("Browser.grantPermissions", {"permissions": ["notifications"], "origin": base})
    driver.click("#push")
    status = wait_for(lambda: (lambda text: text if text.startswith("push") else None)(driver.text("#status")),
                      timeout=30, what="the page to subscribe to push")
    assert status == "push on for ana", f"the page says {status!r}"

    # The subscription Chromium made, as the page stored it with notify.
    subscriptions = request_json("GET", base + "/v1/channels", token=token)["webpush"]
    assert len(subscriptions) == 1, f"ana has {len(subscriptions)} push subscriptions"
    subscription = subscriptions[0]
    assert subscription["endpoint"].startswith("https://jmt17.google.com/fcm/send/"), \
        f"the endpoint is {subscription['endpoint']}"
    # Offline, notify cannot reach Google: the same subscription, with the
    # fake's endpoint for the same token.
    local = fcm.local_endpoint(subscription["endpoint"])
    request_json("DELETE", base + "/v1/channels/webpush", {"endpoint": subscription["endpoint"]}, token)
    request_json("POST", base + "/v1/channels/webpush", {"endpoint": local, "keys": subscription["keys"]}, token)
    stored = request_json("GET", base + "/v1/channels", token=token)["webpush"]
    assert [s["endpoint"] for s in stored] == [local], f"ana's push subscriptions are {stored}"

    # A new post, so it is not folded into the earlier notification.
    event = json.dumps({"owner": "ana", "trigger_user": "dee", "username": PUSH_USERNAME, "action": 1,
                        "resource_type": "POST", "resource_id": "push-post",
                        "excerpt": "Pushed through the fake FCM", "created_at": int(time.time())})
    subprocess.run([NOTIFY, "publish", "notifications.post.like", event], env=env, check=True, capture_output=True)
    newest = wait_for(lambda: next((n for n in request_json("GET", base + "/v1/notifications?limit=1", token=token)["items"]
                                    if n.get("username") == PUSH_USERNAME), None), what="the pushed notification to be stored")
    push_id = newest["id"]

    deadline = time.time() + 30

    def accepted():
        refused = [p for p in fcm.pushes() if p["status"] not in (None, 201)]
        assert not refused, f"the fake FCM refused notify's push: {refused[0]['status']} {refused[0]['error']}"
        pushes = [p for p in fcm.pushes() if p["status"] == 201]
        return pushes if pushes and pushes[0]["forwarded"] else None
    pushes = wait_for(accepted, timeout=max(1, deadline - time.time()), what="the fake FCM to accept and forward the push")
    assert len(pushes) == 1, f"the fake FCM accepted {len(pushes)} pushes"
    push = pushes[0]
    assert push["verified"] and push["vapid"]["aud"] == fcm.push_origin, f"the VAPID token: {push}"
    assert push["vapid"]["k"] == vapid_public_key, "the push is signed with notify's VAPID key"
    assert push["content_encoding"] == "aes128gcm", push

    def shown():
        notifications = driver.execute_async(
            "const done = arguments[arguments.length - 1];"
            "navigator.serviceWorker.ready.then(r => r.getNotifications())"
            ".then(ns => done(ns.map(n => ({title: n.title, body: n.body, tag: n.tag}))))"
            ".catch(e => done({error: String(e)}));")
        assert isinstance(notifications, list), f"getNotifications failed: {notifications}"
        return next((n for n in notifications if PUSH_USERNAME in n["title"]), None)
    notification = wait_for(shown, timeout=max(1, deadline - time.time()), what="the service worker to show the push")
    assert notification["tag"] == push_id, f"the notification's tag is {notification['tag']!r}, not the id {push_id!r}"
    assert notification["body"] == "Pushed through the fake FCM", f"the notification's body is {notification['body']!r}"

    def feed_line():
        try:
            return driver.text(f'#feed li[data-id="{push_id}"]')
        except AssertionError:  # not on the page yet
            return ""
    wait_for(lambda: "webpush: sent" in feed_line(), timeout=max(1, deadline - time.time()),
             what="the page to show webpush: sent")
    return push_id


def _answers(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=1) as response:
            return json.load(response)["value"].get("ready", False)
    except Exception:
        return False


if __name__ == "__main__":
    sys.exit(main())
