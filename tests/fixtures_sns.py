"""SNS messages as AWS sends them, signed with a test certificate served over
HTTPS on loopback, so django-ses verifies the signature for real: it fetches
the signing certificate from `SigningCertURL` (over TLS, checked against the
test CA through REQUESTS_CA_BUNDLE) and checks the SHA1withRSA signature of
the canonical string, as with AWS. Only the host differs: the URL points at
this server, whose host:port is the one trusted cert domain.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import ipaddress
import json
import ssl
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

TOPIC = "arn:aws:sns:us-east-1:123456789012:backoffice-ses-feedback"
CERT_PATH = "/SimpleNotificationService-test.pem"


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _cert(subject: str, key, issuer_name: str, issuer_key, *, ca: bool, sans=None):
    # Fixed, wide validity: TLS checks run on the real clock, tests may pin another.
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
        .not_valid_after(dt.datetime(2099, 12, 31, tzinfo=dt.UTC))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class SnsSigner:
    cert_url: str
    domain: str
    signing_key: rsa.RSAPrivateKey

    def sign(self, message: dict[str, Any]) -> dict[str, Any]:
        """Add SignatureVersion 1 fields as SNS does (canonical string, SHA1withRSA)."""
        if message["Type"] == "Notification":
            fields = ["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
        else:
            fields = [
                "Message",
                "MessageId",
                "SubscribeURL",
                "Timestamp",
                "Token",
                "TopicArn",
                "Type",
            ]
        canonical = "".join(f"{f}\n{message[f]}\n" for f in fields if message.get(f))
        signature = self.signing_key.sign(canonical.encode(), padding.PKCS1v15(), hashes.SHA1())
        return {
            **message,
            "SignatureVersion": "1",
            "Signature": base64.b64encode(signature).decode(),
            "SigningCertURL": self.cert_url,
        }

    def notification(self, event: dict[str, Any], *, topic: str = TOPIC) -> dict[str, Any]:
        return self.sign(
            {
                "Type": "Notification",
                "MessageId": str(uuid.uuid4()),
                "TopicArn": topic,
                "Message": json.dumps(event),
                "Timestamp": "2026-01-01T00:00:00.000Z",
            }
        )

    def subscription(self, *, topic: str = TOPIC, url: str | None = None) -> dict[str, Any]:
        return self.sign(
            {
                "Type": "SubscriptionConfirmation",
                "MessageId": str(uuid.uuid4()),
                "Token": "token-123",
                "TopicArn": topic,
                "Message": "You have chosen to subscribe to the topic.",
                "SubscribeURL": url
                or "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=t",
                "Timestamp": "2026-01-01T00:00:00.000Z",
            }
        )


def bounce_event(message_id: str, *recipients: str, permanent: bool = True) -> dict[str, Any]:
    return {
        "notificationType": "Bounce",
        "mail": {"messageId": message_id, "destination": list(recipients)},
        "bounce": {
            "bounceType": "Permanent" if permanent else "Transient",
            "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": r} for r in recipients],
        },
    }


def complaint_event(message_id: str, *recipients: str) -> dict[str, Any]:
    return {
        "notificationType": "Complaint",
        "mail": {"messageId": message_id, "destination": list(recipients)},
        "complaint": {"complainedRecipients": [{"emailAddress": r} for r in recipients]},
    }


@pytest.fixture(scope="session")
def sns_cert_server(tmp_path_factory) -> Iterator[tuple[str, Path, rsa.RSAPrivateKey]]:
    """(host:port, CA bundle path, SNS signing key): an HTTPS server on loopback
    serving the signing certificate."""
    folder = tmp_path_factory.mktemp("sns")
    ca_key, server_key, signing_key = _key(), _key(), _key()
    ca = _cert("test CA", ca_key, "test CA", ca_key, ca=True)
    server = _cert(
        "localhost",
        server_key,
        "test CA",
        ca_key,
        ca=False,
        sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    signing = _cert("sns.test", signing_key, "sns.test", signing_key, ca=False)
    (folder / "ca.pem").write_bytes(_pem(ca))
    (folder / "server.pem").write_bytes(
        _pem(server)
        + server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    body = _pem(signing)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != CERT_PATH:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/x-pem-file")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "server.pem")
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"localhost:{httpd.server_address[1]}", folder / "ca.pem", signing_key
    httpd.shutdown()


@pytest.fixture
def sns(sns_cert_server, settings, monkeypatch) -> SnsSigner:
    """Trust the test topic and the loopback certificate host; returns a signer."""
    from django_ses import utils

    domain, ca_bundle, signing_key = sns_cert_server
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_bundle))
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    settings.AWS_SNS_EVENT_TRUSTED_TOPIC_ARNS = [TOPIC]
    settings.AWS_SNS_EVENT_CERT_TRUSTED_DOMAINS = [domain]
    utils.clear_cert_cache()
    yield SnsSigner(cert_url=f"https://{domain}{CERT_PATH}", domain=domain, signing_key=signing_key)
    utils.clear_cert_cache()
