"""A fake of Google's push service (FCM) for Chromium, on loopback, so the
browser test can check Web Push end to end offline: a real
PushManager.subscribe() in headless Chromium, notify's encrypted and
VAPID-signed push, and the page's service worker decrypting and showing it.

Usage: python3 scripts/fake-fcm.py   (prints the Chromium flags, serves until
       interrupted or until the process that started it is gone)
Importable (the file name has a dash: load it with importlib); the browser
test does. Requires only the `cryptography` package.

Chromium reaches Google through its GCM client, whose three endpoints
command-line flags can point elsewhere (FakeFCM.chromium_flags; Chromium
also needs --ignore-certificate-errors for the self-signed MCS certificate):
- --gcm-checkin-url: an HTTP server answering the device check-in with an
  AndroidCheckinResponse protobuf (a non-zero device id and security token);
- --gcm-registration-url: the same server; each registration (form fields
  app, X-subtype = the push app id, sender = the applicationServerKey) gets
  `token=<new token>`, and Chromium gives the page the endpoint
  https://jmt17.google.com/fcm/send/<token>;
- --gcm-mcs-endpoint: a TLS server (certificate generated at start) speaking
  MCS, Google's push connection: version byte 41, LoginRequest ->
  LoginResponse, heartbeats acknowledged, and each push delivered as a
  DataMessageStanza (from = the registration's sender, category
  org.chromium.linux, app_data subtype = its app id and content-encoding =
  aes128gcm, the encrypted body as raw_data), which Chromium decrypts with
  the subscription's keys and hands to the service worker.

The push endpoint is a third (plain HTTP) server: POST /fcm/send/<token> is
what an application server sends (RFC 8030). Since the machine is offline,
the test rewrites the subscription's endpoint to it (local_endpoint()). Like
FCM it checks the request before accepting it, answering:
- 201 with Location: Content-Encoding is aes128gcm, TTL is a number, the body
  is 1..4096 bytes with an aes128gcm header (RFC 8188), and Authorization is
  `vapid t=<JWT>, k=<key>` (RFC 8292) whose ES256 signature (raw r||s)
  verifies with k, whose aud is this server's origin, whose exp is in the
  next 24 hours and whose sub is a mailto: or https: contact. The body then
  goes to Chromium over MCS (queued until Chromium has logged in);
- 400 for a failed check, 403 when k is not the applicationServerKey the
  subscription was made with (FCM refuses those too), 404 for an unknown
  token.
Every push, accepted or not, is recorded (FakeFCM.pushes()). The fake cannot
read a push (only the browser has the subscription's private key); what
reached the service worker is for the test to ask the browser.
"""
import base64
import datetime
import ipaddress
import json
import os
import re
import secrets
import shutil
import socket
import ssl
import struct
import sys
import tempfile
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID

MCS_VERSION = 41
TAG_HEARTBEAT_PING, TAG_HEARTBEAT_ACK, TAG_LOGIN_REQUEST, TAG_LOGIN_RESPONSE, TAG_CLOSE = 0, 1, 2, 3, 4
TAG_IQ, TAG_DATA_MESSAGE = 7, 8
MAX_BODY = 4096  # FCM's limit, and the least RFC 8030 §7.2 allows
MAX_EXP_AHEAD = 24 * 60 * 60  # RFC 8292 §2
FCM_ENDPOINT = re.compile(r"^https://[a-z0-9.-]+\.google\.com/fcm/send/([A-Za-z0-9_:.-]+)$")


class Rejected(Exception):
    """A push that fails a check: (status, reason)."""

    def __init__(self, reason, status=400):
        super().__init__(reason)
        self.status = status


# --- encodings ---------------------------------------------------------------

def b64url_decode(text):
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", text) or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def pb_bytes(field, value):
    """A length-delimited protobuf field (string, bytes or message)."""
    if isinstance(value, str):
        value = value.encode()
    return varint(field << 3 | 2) + varint(len(value)) + value


def pb_varint(field, value):
    return varint(field << 3) + varint(value)


def pb_fixed64(field, value):
    return varint(field << 3 | 1) + struct.pack("<Q", value)


# --- the servers -------------------------------------------------------------

class FakeFCM:
    """The check-in/registration server, the MCS server and the push
    endpoint, each on a free 127.0.0.1 port in daemon threads, from
    construction until close()."""

    def __init__(self):
        self._lock = threading.Lock()
        self._registrations = {}  # token -> {"app", "app_id", "sender"}
        self._pushes = []
        self._pending = []  # data message stanzas waiting for an MCS login
        self._mcs_conn = None  # the logged-in MCS connection
        self._mcs_conns = set()
        self._mcs_send_lock = threading.Lock()
        self._message_count = 0
        self._closed = False
        self.log = []  # what happened on the GCM side, for a failing test
        self.mcs_logged_in = threading.Event()
        self._dir = tempfile.mkdtemp(prefix="fake-fcm-")

        self._gcm = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(self._gcm_post))
        self._push = ThreadingHTTPServer(("127.0.0.1", 0), self._handler(self._push_post))
        self.gcm_url = f"http://127.0.0.1:{self._gcm.server_port}"
        self.push_origin = f"http://127.0.0.1:{self._push.server_port}"

        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.load_cert_chain(*self._self_signed())
        self._mcs = socket.create_server(("127.0.0.1", 0))
        self.mcs_port = self._mcs.getsockname()[1]

        self._threads = [threading.Thread(target=server.serve_forever, daemon=True) for server in (self._gcm, self._push)]
        self._threads.append(threading.Thread(target=self._accept_mcs, daemon=True))
        for thread in self._threads:
            thread.start()

    # -- what a test uses --

    @property
    def chromium_flags(self):
        """Points Chromium's GCM client here (add --ignore-certificate-errors
        too: the MCS certificate is self-signed)."""
        return [f"--gcm-checkin-url={self.gcm_url}/checkin",
                f"--gcm-registration-url={self.gcm_url}/register",
                f"--gcm-mcs-endpoint=https://127.0.0.1:{self.mcs_port}"]

    def endpoint_for(self, token):
        """This fake's push endpoint for a registration token."""
        return f"{self.push_origin}/fcm/send/{token}"

    def local_endpoint(self, endpoint):
        """Chromium's https://jmt17.google.com/fcm/send/<token> as this fake's
        endpoint for the token; ValueError for any other URL."""
        match = FCM_ENDPOINT.match(endpoint)
        if not match:
            raise ValueError(f"{endpoint!r} is not an FCM endpoint (https://….google.com/fcm/send/<token>)")
        return self.endpoint_for(match.group(1))

    def pushes(self):
        """Every push received, in order: token, status, error (None when
        accepted), content_encoding, ttl, urgency, size, vapid {aud, exp,
        sub, k} (once the token parsed), verified (the signature checked
        out), forwarded (sent to Chromium over MCS)."""
        with self._lock:
            return [dict(p, vapid=dict(p["vapid"]) if p["vapid"] else None) for p in self._pushes]

    def registrations(self):
        """token -> {"app", "app_id", "sender"} of every registration."""
        with self._lock:
            return {token: dict(r) for token, r in self._registrations.items()}

    def close(self):
        self._closed = True
        for server in (self._gcm, self._push):
            server.shutdown()
            server.server_close()
        self._mcs.close()
        with self._lock:
            conns = list(self._mcs_conns)
        for conn in conns:
            try:
                conn.close()
            except OSError:
                pass
        shutil.rmtree(self._dir, ignore_errors=True)

    # -- HTTP plumbing --

    def _note(self, text):
        with self._lock:
            self.log.append(f"{time.strftime('%H:%M:%S')} {text}")

    @staticmethod
    def _handler(post):
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, headers, reply = post(self.path, self.headers, body)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass
        return Handler

    # -- check-in and registration --

    def _gcm_post(self, path, headers, body):
        if path.startswith("/checkin"):
            # AndroidCheckinResponse: stats_ok (1), time_msec (3),
            # android_id (7, fixed64), security_token (8, fixed64).
            self._note("check-in")
            reply = (pb_varint(1, 1) + pb_varint(3, int(time.time() * 1000))
                     + pb_fixed64(7, 0x1234567890ABCDE) + pb_fixed64(8, 0xFEDCBA987654321))
            return 200, {"Content-Type": "application/x-protobuf"}, reply
        if path.startswith("/register"):
            form = {k: v[-1] for k, v in urllib.parse.parse_qs(body.decode("latin-1")).items()}
            app_id = form.get("X-subtype") or form.get("app", "")
            if form.get("delete") == "true":
                with self._lock:
                    for token in [t for t, r in self._registrations.items() if r["app_id"] == app_id]:
                        del self._registrations[token]
                self._note(f"unregistered {app_id}")
                return 200, {"Content-Type": "text/plain"}, f"deleted={form.get('app', '')}".encode()
            token = "fake-" + secrets.token_urlsafe(24)
            with self._lock:
                self._registrations[token] = {"app": form.get("app", ""), "app_id": app_id, "sender": form.get("sender", "")}
            self._note(f"registered {app_id} (sender {form.get('sender', '')[:16]}…) as {token}")
            return 200, {"Content-Type": "text/plain"}, f"token={token}".encode()
        return 404, {}, b""

    # -- the push endpoint --

    def _push_post(self, path, headers, body):
        match = re.fullmatch(r"/fcm/send/([A-Za-z0-9_:.-]+)", path)
        record = {"token": match.group(1) if match else None, "status": None, "error": None,
                  "content_encoding": headers.get("Content-Encoding"), "ttl": headers.get("TTL"),
                  "urgency": headers.get("Urgency"), "size": len(body), "vapid": None, "verified": False,
                  "forwarded": False}
        with self._lock:
            self._pushes.append(record)
            registration = self._registrations.get(record["token"]) if match else None
        try:
            if not match:
                raise Rejected(f"no such endpoint {path}", 404)
            if registration is None:
                raise Rejected(f"unknown or unregistered token {record['token']}", 404)
            self._check(record, headers, body, registration)
        except Rejected as rejected:
            with self._lock:
                record["status"], record["error"] = rejected.status, str(rejected)
            self._note(f"push to {record['token']} refused: {rejected.status} {rejected}")
            reply = json.dumps({"error": str(rejected)}).encode()
            return rejected.status, {"Content-Type": "application/json"}, reply
        with self._lock:
            record["status"] = 201
            self._message_count += 1
            message_id = f"0:fake-{self._message_count}-{secrets.token_hex(4)}"
        self._note(f"push to {record['token']} accepted ({len(body)} bytes) as {message_id}")
        self._forward(record, registration, body, message_id)
        return 201, {"Location": f"{self.push_origin}/fcm/message/{message_id}"}, b""

    def _check(self, record, headers, body, registration):
        if (headers.get("Content-Encoding") or "").strip().lower() != "aes128gcm":
            raise Rejected(f"Content-Encoding is {headers.get('Content-Encoding')!r}, not aes128gcm")
        if not re.fullmatch(r"\d+", (headers.get("TTL") or "").strip()):
            raise Rejected("TTL is missing or not a number of seconds")  # RFC 8030 §5.2: 400
        if not 0 < len(body) <= MAX_BODY:
            raise Rejected(f"body is {len(body)} bytes; 1 to {MAX_BODY} are allowed", 413 if body else 400)
        # RFC 8188 §2.1 header: salt (16) | rs (4) | idlen (1) | keyid, then
        # at least the 16-byte tag; Web Push's keyid is the 65-byte key.
        if len(body) < 21 + 65 + 17 or body[20] != 65 or body[21] != 4:
            raise Rejected("body does not start with an aes128gcm header whose keyid is a 65-byte P-256 key")

        scheme, _, rest = (headers.get("Authorization") or "").strip().partition(" ")
        if scheme.lower() != "vapid":
            raise Rejected("Authorization is not `vapid t=…, k=…`", 401)
        params = {}
        for part in rest.split(","):
            name, _, value = part.strip().partition("=")
            params[name.strip().lower()] = value.strip()
        if set(params) != {"t", "k"}:
            raise Rejected("Authorization must have exactly the parameters t and k", 401)
        try:
            key_bytes = b64url_decode(params["k"])
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key_bytes)
            assert len(key_bytes) == 65
        except (ValueError, AssertionError):
            raise Rejected("k is not an unpadded base64url uncompressed P-256 key", 401)
        parts = params["t"].split(".")
        if len(parts) != 3:
            raise Rejected("t is not a JWT (three dot-separated parts)", 401)
        try:
            header = json.loads(b64url_decode(parts[0]))
            claims = json.loads(b64url_decode(parts[1]))
            signature = b64url_decode(parts[2])
        except ValueError:
            raise Rejected("the JWT's parts are not base64url JSON", 401)
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise Rejected("the JWT's header and claims must be JSON objects", 401)
        with self._lock:
            record["vapid"] = {"aud": claims.get("aud"), "exp": claims.get("exp"), "sub": claims.get("sub"), "k": params["k"]}
        if header.get("alg") != "ES256":
            raise Rejected(f"the JWT's alg is {header.get('alg')!r}, not ES256", 401)
        if len(signature) != 64:  # JWS ES256 is raw r||s (RFC 7518 §3.4), not DER
            raise Rejected(f"the JWT's signature is {len(signature)} bytes, not 64 (r||s)", 401)
        der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
        try:
            key.verify(der, f"{parts[0]}.{parts[1]}".encode(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise Rejected("the JWT's signature does not verify with k", 401)
        with self._lock:
            record["verified"] = True
        if claims.get("aud") != self.push_origin:
            raise Rejected(f"aud is {claims.get('aud')!r}, not this push service's origin {self.push_origin!r}", 401)
        exp, now = claims.get("exp"), time.time()
        if not isinstance(exp, int) or isinstance(exp, bool) or not now < exp <= now + MAX_EXP_AHEAD + 60:
            raise Rejected(f"exp {exp!r} is not a time within the next 24 hours", 401)
        sub = claims.get("sub")
        if not isinstance(sub, str) or not (sub.startswith("mailto:") or sub.startswith("https:")):
            raise Rejected(f"sub {sub!r} is not a mailto: or https: contact", 401)
        try:
            sender = b64url_decode(registration["sender"].rstrip("="))
        except ValueError:
            sender = None
        if sender != key_bytes:
            raise Rejected("k is not the applicationServerKey this subscription was made with", 403)

    # -- MCS --

    def _self_signed(self):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
                .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
                .sign(key, hashes.SHA256()))
        certfile, keyfile = os.path.join(self._dir, "mcs-cert.pem"), os.path.join(self._dir, "mcs-key.pem")
        with open(certfile, "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(keyfile, "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
        return certfile, keyfile

    def _accept_mcs(self):
        while not self._closed:
            try:
                raw, _ = self._mcs.accept()
            except OSError:
                return
            threading.Thread(target=self._serve_mcs, args=(raw,), daemon=True).start()

    @staticmethod
    def _read_exact(conn, n):
        data = b""
        while len(data) < n:
            chunk = conn.recv(n - len(data))
            if not chunk:
                raise EOFError("the connection closed")
            data += chunk
        return data

    def _read_varint(self, conn):
        shift = value = 0
        while True:
            byte = self._read_exact(conn, 1)[0]
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    def _serve_mcs(self, raw):
        conn = None
        try:
            conn = self._tls.wrap_socket(raw, server_side=True)
            with self._lock:
                self._mcs_conns.add(conn)
            version = self._read_exact(conn, 1)[0]
            self._note(f"MCS connection, client version {version}")
            greeted = False
            while True:
                tag = self._read_exact(conn, 1)[0]
                payload = self._read_exact(conn, self._read_varint(conn))
                if tag == TAG_LOGIN_REQUEST:
                    # LoginResponse: id (1, required), server_timestamp (8).
                    response = pb_bytes(1, "fake-login") + pb_varint(8, int(time.time() * 1000))
                    with self._mcs_send_lock:
                        conn.sendall((b"" if greeted else bytes([MCS_VERSION]))
                                     + bytes([TAG_LOGIN_RESPONSE]) + varint(len(response)) + response)
                    greeted = True
                    with self._lock:
                        self._mcs_conn = conn
                        pending, self._pending = self._pending, []
                    self._note("MCS login")
                    self.mcs_logged_in.set()
                    for stanza, record in pending:
                        self._send_stanza(stanza, record)
                elif tag == TAG_HEARTBEAT_PING:
                    with self._mcs_send_lock:
                        conn.sendall(bytes([TAG_HEARTBEAT_ACK, 0]))
                elif tag == TAG_CLOSE:
                    break
                # Acknowledgements (IqStanza) and anything else: nothing to do.
        except (OSError, EOFError, ssl.SSLError) as error:
            if not self._closed:
                self._note(f"MCS connection ended: {type(error).__name__}: {error}")
        finally:
            with self._lock:
                self._mcs_conns.discard(conn)
                if self._mcs_conn is conn:
                    self._mcs_conn = None
            if conn is not None:
                try:
                    conn.close()
                except OSError:
                    pass
            else:
                raw.close()

    def _forward(self, record, registration, body, message_id):
        # DataMessageStanza: id (2), from (3), to (4), category (5),
        # app_data (7: key 1, value 2), persistent_id (9), raw_data (21).
        stanza = (pb_bytes(2, message_id) + pb_bytes(3, registration["sender"]) + pb_bytes(4, "")
                  + pb_bytes(5, "org.chromium.linux")
                  + pb_bytes(7, pb_bytes(1, "subtype") + pb_bytes(2, registration["app_id"]))
                  + pb_bytes(7, pb_bytes(1, "content-encoding") + pb_bytes(2, "aes128gcm"))
                  + pb_bytes(9, message_id) + pb_bytes(21, body))
        self._send_stanza(stanza, record)

    def _send_stanza(self, stanza, record):
        with self._lock:
            conn = self._mcs_conn
            if conn is None:
                self._pending.append((stanza, record))
        if conn is None:
            self._note(f"push to {record['token']} queued until Chromium logs in to MCS")
            return
        try:
            with self._mcs_send_lock:
                conn.sendall(bytes([TAG_DATA_MESSAGE]) + varint(len(stanza)) + stanza)
        except OSError as error:
            self._note(f"sending over MCS failed ({error}); queued for the next login")
            with self._lock:
                if self._mcs_conn is conn:
                    self._mcs_conn = None
                self._pending.append((stanza, record))
            return
        with self._lock:
            record["forwarded"] = True
        self._note(f"push to {record['token']} delivered over MCS")


def main():
    fake = FakeFCM()
    print("Chromium flags: " + " ".join(fake.chromium_flags + ["--ignore-certificate-errors"]))
    print(f"push endpoint: {fake.push_origin}/fcm/send/<token>", flush=True)
    parent = os.getppid()
    try:
        while os.getppid() == parent:
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        fake.close()
        for line in fake.log:
            print(line, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
