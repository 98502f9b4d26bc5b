"""An SMTP server for the email sender's integration tests: aiosmtpd on loopback.

Usage: python3 scripts/smtp-server.py --directory DIR [--port N]
           [--username U --password P] [--tls starttls|none]

--port 0 (the default) takes a free port. At start it writes a fresh
self-signed certificate for localhost (subjectAltName DNS:localhost and
IP:127.0.0.1, CA:TRUE so a client can trust it as its own root) to
DIR/cert.pem and its key to DIR/key.pem, and empties DIR/messages.jsonl.

--tls starttls (the default) offers STARTTLS with that certificate and
refuses every command but EHLO, NOOP, STARTTLS and QUIT before it (530).
As RFC 3207 says, STARTTLS forgets the EHLO: the client must send EHLO
again, and only that second EHLO lists AUTH. --username and --password
offer AUTH PLAIN and LOGIN, accept only that pair (535 otherwise) and
refuse MAIL without it (530 5.7.0); without them there is no AUTH.

Prints "listening on 127.0.0.1:PORT" once it accepts connections, and exits
when the process that started it is gone, so a test run never leaves it
behind. Logs every connection and command to stderr.

Scripted failures by the local part of RCPT TO, every time:
- reject...  -> 550 5.1.1 mailbox unavailable
- busy...    -> 451 4.3.0 try again later

Each accepted message becomes one line of JSON in DIR/messages.jsonl:
mail_from, mail_options, rcpt_tos, tls, auth_user, headers (name as sent ->
list of decoded values), content_type, parts (content_type, charset,
transfer_encoding of each leaf part; transfer_encoding null when the header
is absent), text and html (decoded bodies or null; line endings as they
decode, so CRLF unless the part was base64 of LF text), raw, defects (of the
headers, the message and every part; decoding errors included) and
max_line_length (in bytes, without the line ending). aiosmtpd itself
refuses a message with a line over 1000 bytes ("500 Line too long").

Requires `pip install aiosmtpd` and `cryptography`.
"""
import argparse
import asyncio
import datetime
import email
import email.policy
import hmac
import ipaddress
import json
import logging
import os
import re
import ssl
import signal
import sys
import threading
import time

from aiosmtpd.smtp import SMTP, AuthResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger("smtp-server")


def _arguments():
    parser = argparse.ArgumentParser(description="SMTP server for integration tests")
    parser.add_argument("--directory", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--username")
    parser.add_argument("--password")
    parser.add_argument("--tls", choices=("starttls", "none"), default="starttls")
    args = parser.parse_args()
    if (args.username is None) != (args.password is None):
        parser.error("--username and --password go together")
    return args


def _write_certificate(directory):
    """A self-signed certificate that is its own trust root. Besides
    CA:TRUE it carries key identifiers, keyCertSign and serverAuth, which
    strict verifiers (OpenSSL's X509_STRICT, Python 3.13's default context)
    demand of a certificate that is both the root and the server's."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    public_key = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(directory, "cert.pem")
    key_path = os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(certificate.public_bytes(serialization.Encoding.PEM))
    key_fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(key_fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


def _tls_context(cert_path, key_path):
    # Purpose.CLIENT_AUTH: a server context that asks no client certificate.
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context


class _OnlyThisLogin:
    """aiosmtpd authenticator accepting one user name and password. Its
    auth_data (the LoginPassword) ends up in session.auth_data."""

    def __init__(self, username, password):
        self.username = username.encode()
        self.password = password.encode()

    def __call__(self, server, session, envelope, mechanism, auth_data):
        ok = (
            mechanism in ("PLAIN", "LOGIN")
            and hmac.compare_digest(auth_data.login, self.username)
            and hmac.compare_digest(auth_data.password, self.password)
        )
        # handled=False lets aiosmtpd answer 535 5.7.8 on failure.
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)


def _defect_names(defects, where=None):
    # str() of many defects is empty, so the class name comes first.
    names = []
    for defect in defects:
        text = type(defect).__name__
        if str(defect):
            text += f": {defect}"
        names.append(f"{where}: {text}" if where else text)
    return names


def _defects(message):
    """Defects of the structure and of every header, in every part: a
    badly encoded address shows up only on the header object."""
    found = []
    for part in message.walk():
        if not part.is_multipart():
            # Bad base64 or quoted-printable is noticed (and added to
            # part.defects) only when the payload is decoded.
            part.get_payload(decode=True)
        found += _defect_names(part.defects)
        for name, value in part.items():
            found += _defect_names(getattr(value, "defects", ()), name)
    return found


def _body_text(message, subtype, defects):
    """The decoded inline text/<subtype> body (get_body skips attachments),
    or None."""
    part = message.get_body(preferencelist=(subtype,))
    if part is None or part.get_content_type() != f"text/{subtype}":
        return None
    try:
        return part.get_content()
    except (LookupError, UnicodeError, ValueError) as error:
        # An unknown charset or a broken encoding is something the tests
        # want to see, not a reason to drop the message.
        defects.append(f"text/{subtype}: {type(error).__name__}: {error}")
        return (part.get_payload(decode=True) or b"").decode("utf-8", errors="replace")


def _leaf_parts(message):
    parts = []
    for part in message.walk():
        if part.is_multipart():
            continue
        encoding = part.get("Content-Transfer-Encoding")
        parts.append(
            {
                "content_type": part.get_content_type(),
                "charset": part.get_content_charset(),
                # None when the header is absent (which means 7bit).
                "transfer_encoding": str(encoding).strip().lower() if encoding is not None else None,
            }
        )
    return parts


def _headers(message):
    headers = {}
    for name, value in message.items():
        headers.setdefault(name, []).append(str(value))
    return headers


def _max_line_length(raw):
    # Lines as they crossed the wire (aiosmtpd has removed the dot
    # stuffing); a bare LF also ends a line.
    return max((len(line.rstrip(b"\r")) for line in re.split(rb"\n", raw)), default=0)


def _auth_user(session):
    if not session.authenticated or session.auth_data is None:
        return None
    return session.auth_data.login.decode("utf-8", errors="replace")


def _record(session, envelope):
    raw = envelope.original_content
    message = email.message_from_bytes(raw, policy=email.policy.default)
    defects = _defects(message)
    text = _body_text(message, "plain", defects)
    html = _body_text(message, "html", defects)
    return {
        "mail_from": envelope.mail_from,
        "mail_options": envelope.mail_options,
        "rcpt_tos": envelope.rcpt_tos,
        "tls": session.ssl is not None,
        "auth_user": _auth_user(session),
        "headers": _headers(message),
        "content_type": message.get_content_type(),
        "parts": _leaf_parts(message),
        "text": text,
        "html": html,
        "raw": raw.decode("utf-8", errors="replace"),
        "defects": defects,
        "max_line_length": _max_line_length(raw),
    }


class _Handler:
    def __init__(self, messages_path, offer_auth):
        self.messages_path = messages_path
        self.offer_auth = offer_auth

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        # aiosmtpd lists AUTH (after STARTTLS) even with nothing to log in
        # to; without credentials the client must see no AUTH at all.
        session.host_name = hostname
        if self.offer_auth:
            return responses
        return [line for line in responses if not line.startswith("250-AUTH")]

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local_part = address.rsplit("@", 1)[0].lower()
        refusal = None
        if local_part.startswith("reject"):
            refusal = "550 5.1.1 mailbox unavailable"
        elif local_part.startswith("busy"):
            refusal = "451 4.3.0 try again later"
        if refusal:
            # aiosmtpd logs "recip: ..." whatever the answer; say it was refused.
            log.info("%r refused %s: %s", session.peer, address, refusal)
            return refusal
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        line = json.dumps(_record(session, envelope), ensure_ascii=False) + "\n"
        # One write of a whole line from the only (event loop) thread: a
        # reader never sees half a message, even with several connections.
        with open(self.messages_path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
        return "250 OK"


def _exit_with_parent():
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


async def _serve(args):
    os.makedirs(args.directory, exist_ok=True)
    cert_path, key_path = _write_certificate(args.directory)
    messages_path = os.path.join(args.directory, "messages.jsonl")
    open(messages_path, "w").close()

    authenticator = _OnlyThisLogin(args.username, args.password) if args.username is not None else None
    handler = _Handler(messages_path, offer_auth=authenticator is not None)
    starttls = args.tls == "starttls"
    tls_context = _tls_context(cert_path, key_path) if starttls else None
    loop = asyncio.get_running_loop()

    def connection():
        return SMTP(
            handler,
            # A fixed name: the default, socket.getfqdn(), can take seconds.
            hostname="localhost",
            tls_context=tls_context,
            require_starttls=starttls,
            # Without TLS to require, AUTH must be offered in the clear.
            auth_require_tls=starttls,
            auth_required=authenticator is not None,
            authenticator=authenticator,
            # Without credentials an AUTH command gets 504, not 535.
            auth_exclude_mechanism=() if authenticator is not None else ("PLAIN", "LOGIN"),
            loop=loop,
        )

    server = await loop.create_server(connection, "127.0.0.1", args.port)
    port = server.sockets[0].getsockname()[1]
    print(f"listening on 127.0.0.1:{port}", flush=True)
    await server.serve_forever()


def main():
    args = _arguments()
    # The test runner starts children with most signals blocked (a blocked
    # signal survives exec): unblock them so stop()'s SIGTERM ends us at once.
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    _exit_with_parent()
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    # aiosmtpd sets the deprecated session.login_data itself on every
    # successful AUTH and then warns about it: noise, not a problem.
    logging.getLogger("mail.log").addFilter(lambda record: "login_data is deprecated" not in record.getMessage())
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
