"""A Web Push service for tests: the push service (RFC 8030) and the
browser's user agent in one, on loopback.

Usage: python3 scripts/push-service.py [--port PORT]   (0 or nothing: a free port)
       python3 scripts/push-service.py --self-test

Prints "listening on 127.0.0.1:PORT" once it answers, logs one line per
request to stderr, and exits when the process that started it is gone, so a
test run never leaves it behind. --self-test decrypts the example of
RFC 8291 section 5, prints "ok" and exits 0 (non-zero on a mismatch).
Requires only the `cryptography` package.

It holds the subscriptions' private keys, so it can check what a sender
really sent: each push is decrypted (RFC 8291 aes128gcm, RFC 8188 framing)
and its VAPID signature verified (RFC 8292), then recorded for the test.

Endpoints (JSON; base64url is unpadded URL-safe base64):
- POST /subscriptions, optional body {"status": 410} or
  {"status": 503, "times": 1, "retry_after": 1}: a new subscription, 201
  {"endpoint": ..., "keys": {"p256dh": ..., "auth": ...}} as a browser's
  PushSubscription.toJSON(). With "status", the first "times" valid pushes
  (all of them without "times") are answered with that status (and
  Retry-After), after being verified and recorded.
- POST /push/<id>: a push message; 201 with Location when valid, 400
  {"error": reason} on the first failed check, 404 for an unknown id.
- GET /messages: every push received, valid or not, in order of arrival.
- DELETE /messages: forgets them (204).
"""
import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import struct
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

B64URL = re.compile(r"^[A-Za-z0-9_-]*$")
URGENCIES = ("very-low", "low", "normal", "high")
MAX_BODY = 4096  # RFC 8030 §7.2: a push service must accept at least 4096 bytes
MAX_EXP_AHEAD = 24 * 60 * 60  # RFC 8292 §2: exp at most 24 hours ahead


class Rejected(Exception):
    """A push that fails a check; the message is the reason sent back."""


def b64url_decode(text):
    """Strict unpadded base64url: a sender that pads or uses + and / is
    wrong, and a lenient decoder would hide it."""
    if not isinstance(text, str) or not B64URL.match(text) or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url_encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_bytes(private_key):
    """The 65-byte uncompressed point, the form p256dh, k and keyid use."""
    return private_key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def load_point(data):
    if len(data) != 65 or data[0] != 4:
        raise ValueError("not a 65-byte uncompressed P-256 point")
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), data)


def hmac_sha256(key, data):
    return hmac.new(key, data, hashlib.sha256).digest()


# --- RFC 8291 / RFC 8188: the user agent's half -----------------------------

def derive(ua_private, auth_secret, as_public, salt):
    """RFC 8291 §3.3-3.4, written out as the HMAC steps of HKDF so each step
    can be compared with the RFC's appendix. Returns (ecdh_secret, CEK, NONCE)."""
    ecdh_secret = ua_private.exchange(ec.ECDH(), load_point(as_public))
    prk_key = hmac_sha256(auth_secret, ecdh_secret)
    key_info = b"WebPush: info\x00" + public_bytes(ua_private) + as_public
    ikm = hmac_sha256(prk_key, key_info + b"\x01")
    prk = hmac_sha256(salt, ikm)
    cek = hmac_sha256(prk, b"Content-Encoding: aes128gcm\x00\x01")[:16]
    nonce = hmac_sha256(prk, b"Content-Encoding: nonce\x00\x01")[:12]
    return ecdh_secret, cek, nonce


def parse_header(body):
    """RFC 8188 §2.1: salt(16) | rs(uint32) | idlen(1) | keyid(idlen)."""
    if len(body) > MAX_BODY:
        raise Rejected(f"body is {len(body)} bytes, more than {MAX_BODY}")
    if len(body) < 21:
        raise Rejected("body shorter than the aes128gcm header")
    salt, rs, idlen = body[:16], struct.unpack(">I", body[16:20])[0], body[20]
    if idlen != 65:
        raise Rejected(f"keyid is {idlen} bytes, not the 65-byte sender public key")
    if len(body) < 21 + idlen:
        raise Rejected("body shorter than its keyid")
    return salt, rs, body[21:21 + idlen], body[21 + idlen:]


def decrypt(body, ua_private, auth_secret):
    """The plaintext bytes of an aes128gcm push body; Rejected otherwise."""
    salt, rs, as_public, ciphertext = parse_header(body)
    if rs < 18:
        raise Rejected(f"record size {rs} is below 18")  # RFC 8188 §2.1
    # Web Push allows one record only (RFC 8291 §4), so it must fit in rs.
    if len(ciphertext) > rs:
        raise Rejected(f"ciphertext of {len(ciphertext)} bytes exceeds record size {rs}: more than one record")
    if len(ciphertext) < 17:
        raise Rejected("ciphertext shorter than tag and padding delimiter")
    try:
        _, cek, nonce = derive(ua_private, auth_secret, as_public, salt)
    except ValueError:
        raise Rejected("keyid is not a valid P-256 public key")
    try:
        padded = AESGCM(cek).decrypt(nonce, ciphertext, None)
    except InvalidTag:
        raise Rejected("decryption failed (bad key, salt or tampered body)")
    # RFC 8188 §2: data, then a delimiter (2 in the last record), then zeros.
    stripped = padded.rstrip(b"\x00")
    if not stripped or stripped[-1] != 2:
        raise Rejected("padding delimiter is not 0x02 (last record)")
    return stripped[:-1]


# --- RFC 8292: VAPID --------------------------------------------------------

def parse_authorization(value):
    """(t, k) from `vapid t=<jwt>, k=<key>`, parameters in either order."""
    scheme, _, rest = (value or "").strip().partition(" ")
    if scheme.lower() != "vapid":
        raise Rejected("Authorization is not the vapid scheme")
    params = {}
    for part in rest.split(","):
        name, eq, val = part.strip().partition("=")
        if not eq or name.lower() not in ("t", "k") or name.lower() in params:
            raise Rejected("Authorization must have exactly the parameters t and k")
        params[name.lower()] = val.strip().strip('"')
    if set(params) != {"t", "k"}:
        raise Rejected("Authorization must have exactly the parameters t and k")
    return params["t"], params["k"]


def verify_jwt(token, k):
    """The claims of the ES256 JWT `token`, signed by the key `k`."""
    try:
        key = load_point(b64url_decode(k))
    except ValueError:
        raise Rejected("k is not a base64url 65-byte P-256 public key")
    parts = token.split(".")
    if len(parts) != 3:
        raise Rejected("JWT does not have three parts")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        signature = b64url_decode(parts[2])
    except ValueError:
        raise Rejected("JWT parts are not base64url JSON")
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise Rejected("JWT header and claims must be JSON objects")
    if header.get("alg") != "ES256" or header.get("typ", "JWT") != "JWT":
        raise Rejected(f"JWT header is {header}, not typ JWT, alg ES256")
    # JWS ES256 signatures are r||s, 32 bytes each (RFC 7518 §3.4), not DER.
    if len(signature) != 64:
        raise Rejected(f"JWT signature is {len(signature)} bytes, not 64 (r||s)")
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big"))
    try:
        key.verify(der, f"{parts[0]}.{parts[1]}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise Rejected("JWT signature does not verify with k")
    return claims


def check_claims(claims, origin):
    if claims.get("aud") != origin:
        raise Rejected(f"aud is {claims.get('aud')!r}, not {origin!r}")
    exp, now = claims.get("exp"), time.time()
    if not isinstance(exp, int) or isinstance(exp, bool):
        raise Rejected("exp is not an integer")
    if exp <= now:
        raise Rejected("exp is in the past")
    if exp > now + MAX_EXP_AHEAD:
        raise Rejected("exp is more than 24 hours ahead")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.startswith(("mailto:", "https:")):
        raise Rejected("sub is not a mailto: or https: URI")


# --- RFC 8030: the push message's headers -----------------------------------

def check_headers(headers):
    if (headers["content_encoding"] or "").lower() != "aes128gcm":
        raise Rejected(f"Content-Encoding is {headers['content_encoding']!r}, not aes128gcm")
    if headers["ttl"] is None or not re.fullmatch(r"[0-9]+", headers["ttl"]):
        raise Rejected("TTL is missing or not a non-negative integer")
    if headers["urgency"] is not None and headers["urgency"] not in URGENCIES:
        raise Rejected(f"Urgency {headers['urgency']!r} is not one of {', '.join(URGENCIES)}")
    topic = headers["topic"]
    if topic is not None and not (0 < len(topic) <= 32 and B64URL.match(topic)):
        raise Rejected("Topic is not 1 to 32 characters of the base64url alphabet")


# --- state ------------------------------------------------------------------

class State:
    """Subscriptions and received pushes, shared by the request threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.subscriptions = {}
        self.messages = []
        self.received = 0  # numbers the Location of accepted pushes; never reset

    def subscribe(self, status, times, retry_after):
        sub_id = secrets.token_urlsafe(12)
        sub = {"private": ec.generate_private_key(ec.SECP256R1()), "auth": secrets.token_bytes(16),
               "status": status, "times": times, "retry_after": retry_after}
        with self.lock:
            self.subscriptions[sub_id] = sub
        return sub_id, sub

    def answer_for(self, sub):
        """The status for a verified push, using up one configured answer."""
        with self.lock:
            if sub["status"] is None or sub["times"] == 0:
                return 201, None
            if sub["times"] is not None:
                sub["times"] -= 1
            return sub["status"], sub["retry_after"]

    def record(self, message):
        with self.lock:
            self.received += 1
            self.messages.append(message)
            return self.received


def check_push(headers, authorization, body, sub, origin, message):
    """Runs the checks in order, filling `message` as far as they get."""
    check_headers(headers)
    token, k = parse_authorization(authorization)
    claims = verify_jwt(token, k)
    message["vapid"] = {"k": k, "aud": claims.get("aud"), "exp": claims.get("exp"), "sub": claims.get("sub")}
    check_claims(claims, origin)
    message["record_size"] = parse_header(body)[1]
    plaintext = decrypt(body, sub["private"], sub["auth"])
    try:
        message["payload"] = plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected("plaintext is not UTF-8")


# --- HTTP -------------------------------------------------------------------

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real push service
    state = None  # set by serve()
    note = ""

    @property
    def origin(self):
        return f"http://127.0.0.1:{self.server.server_port}"

    def read_body(self):
        """The whole request body, so a keep-alive connection stays in step
        even when the request is refused."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def reply(self, status, body=None, headers=()):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if status != 204:
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_request(self, code="-", size="-"):
        sys.stderr.write(f"push-service: {self.command} {self.path} {code}{self.note}\n")
        self.note = ""  # one handler serves every request of a keep-alive connection

    def do_GET(self):
        self.read_body()
        if self.path != "/messages":
            return self.reply(404, {"error": "not found"})
        with self.state.lock:
            messages = list(self.state.messages)
        self.reply(200, messages)

    def do_DELETE(self):
        self.read_body()
        if self.path != "/messages":
            return self.reply(404, {"error": "not found"})
        with self.state.lock:
            self.state.messages.clear()
        self.reply(204)

    def do_POST(self):
        body = self.read_body()
        if self.path == "/subscriptions":
            return self.subscribe(body)
        if self.path.startswith("/push/"):
            return self.push(self.path[len("/push/"):], body)
        self.reply(404, {"error": "not found"})

    def subscribe(self, body):
        try:
            options = json.loads(body) if body.strip() else {}
            status, times, retry_after = (options.get(name) for name in ("status", "times", "retry_after"))
            for value in (status, times, retry_after):
                if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                    raise ValueError
            if status is not None and not 100 <= status <= 599:
                raise ValueError
        except (ValueError, AttributeError):
            return self.reply(400, {"error": 'body must be {"status": int, "times": int, "retry_after": int}'})
        sub_id, sub = self.state.subscribe(status, times, retry_after)
        self.note = f" {sub_id}" + (f" answers {status}" if status else "")
        self.reply(201, {"endpoint": f"{self.origin}/push/{sub_id}",
                         "keys": {"p256dh": b64url_encode(public_bytes(sub["private"])),
                                  "auth": b64url_encode(sub["auth"])}})

    def push(self, sub_id, body):
        headers = {"ttl": self.headers.get("TTL"), "urgency": self.headers.get("Urgency"),
                   "topic": self.headers.get("Topic"), "content_encoding": self.headers.get("Content-Encoding")}
        message = {"subscription": sub_id, "endpoint": f"{self.origin}/push/{sub_id}", "accepted": False,
                   "error": None, "answered": None, "payload": None, "headers": headers,
                   "vapid": None, "record_size": None}
        with self.state.lock:
            sub = self.state.subscriptions.get(sub_id)
        if sub is None:
            return self.refuse(message, 404, "unknown subscription")
        try:
            check_push(headers, self.headers.get("Authorization"), body, sub, self.origin, message)
        except Rejected as error:
            return self.refuse(message, 400, str(error))
        status, retry_after = self.state.answer_for(sub)
        message.update(accepted=True, answered=status)
        number = self.state.record(message)
        self.note = f" accepted {len(message['payload'])} characters"
        if status == 201:
            return self.reply(201, {"location": f"/messages/{number}"}, [("Location", f"/messages/{number}")])
        extra = [("Retry-After", str(retry_after))] if retry_after is not None else []
        self.reply(status, {"error": f"configured to answer {status}"}, extra)

    def refuse(self, message, status, reason):
        message.update(error=reason, answered=status, payload=None)
        self.state.record(message)
        self.note = f" rejected: {reason}"
        self.reply(status, {"error": reason})


def exit_with_parent():
    """Polls the parent: a crashed or killed test run must not leave the
    server behind, and nothing else would tell it to stop."""
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def serve(port):
    Handler.state = State()
    # The test runner starts children with most signals blocked (a blocked
    # signal survives exec): unblock them so stop()'s SIGTERM ends us at once.
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=exit_with_parent, daemon=True).start()
    print(f"listening on 127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()


# --- RFC 8291 §5 / Appendix A example ---------------------------------------

RFC8291 = {
    "plaintext": "When I grow up, I want to be a watermelon",
    "ua_private": "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94",
    "ua_public": "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
    "auth": "BTBZMqHH6r4Tts7J_aSIgg",
    "as_private": "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw",
    "as_public": "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8",
    "salt": "DGv6ra1nlYgDCS1FRnbzlw",
    "ecdh_secret": "kyrL1jIIOHEzg3sM2ZWRHDRB62YACZhhSlknJ672kSs",
    "cek": "oIhVW04MRdy2XN9CiKLxTg",
    "nonce": "4h_95klXJ5E_qnoN",
    "body": "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6"
            "PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN",
}


def decrypt_or_reason(body, ua_private, auth_secret):
    try:
        return decrypt(body, ua_private, auth_secret).decode()
    except Rejected as error:
        return str(error)


def self_test():
    """Decrypts the RFC's example body, checking each intermediate value on
    the way, so a wrong step is named rather than just "decryption failed"."""
    v = {name: value if name == "plaintext" else b64url_decode(value) for name, value in RFC8291.items()}
    ua_private = ec.derive_private_key(int.from_bytes(v["ua_private"], "big"), ec.SECP256R1())
    as_private = ec.derive_private_key(int.from_bytes(v["as_private"], "big"), ec.SECP256R1())
    secret, cek, nonce = derive(ua_private, v["auth"], v["as_public"], v["salt"])
    checks = [("ua_public", public_bytes(ua_private), v["ua_public"]),
              ("as_public", public_bytes(as_private), v["as_public"]),
              ("header", parse_header(v["body"])[2], v["as_public"]),
              ("ecdh_secret", secret, v["ecdh_secret"]), ("cek", cek, v["cek"]), ("nonce", nonce, v["nonce"]),
              ("plaintext", decrypt_or_reason(v["body"], ua_private, v["auth"]), v["plaintext"])]
    failed = [name for name, got, want in checks if got != want]
    if failed:
        print(f"self-test failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("ok")
    return 0


def main():
    parser = argparse.ArgumentParser(description="Web Push service stand-in for tests.")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free port)")
    parser.add_argument("--self-test", action="store_true", help="check the RFC 8291 example and exit")
    args = parser.parse_args()
    if args.self_test:
        sys.exit(self_test())
    serve(args.port)


if __name__ == "__main__":
    main()
