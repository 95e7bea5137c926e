"""Invoice settings as a process sees them at start-up (a fresh interpreter each)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
READ = (
    "import django; django.setup(); from django.conf import settings as s; "
    "print(s.INVOICE_SELLER_NAME, '|', s.INVOICE_SELLER_ADDRESS.replace(chr(10), '/'), '|', "
    "s.INVOICE_SELLER_COUNTRY, '|', s.INVOICE_TAX_NAME, '|', s.INVOICE_PAYMENT_TERMS_DAYS, "
    "'|', s.INVOICE_GRACE_HOURS)"
)


def start(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("INVOICE_")}
    clean.update(
        env,
        DJANGO_SETTINGS_MODULE="config.settings",
        ENV_FILE="",
        SECRET_KEY="x",
        DATABASE_URL=f"sqlite:///{tmp_path}/x.db",
    )
    return subprocess.run(
        [sys.executable, "-c", READ],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_defaults(tmp_path):
    result = start(tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Back-office SaaS Ltd |  |  | VAT | 14 | 0"


def test_the_seller_from_the_environment_and_the_older_issuer_names(tmp_path):
    seller = start(
        tmp_path,
        INVOICE_SELLER_NAME="Seller GmbH",
        INVOICE_SELLER_ADDRESS="Torstrasse 1\\n10119 Berlin",
        INVOICE_SELLER_COUNTRY="de",
        INVOICE_PAYMENT_TERMS_DAYS="30",
        INVOICE_GRACE_HOURS="24",
    )
    assert seller.stdout.strip() == "Seller GmbH | Torstrasse 1/10119 Berlin | DE | VAT | 30 | 24"
    older = start(tmp_path, INVOICE_ISSUER_NAME="Issuer Ltd", INVOICE_ISSUER_ADDRESS="1 Road")
    assert older.stdout.strip().startswith("Issuer Ltd | 1 Road |")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"INVOICE_TAX_RATE_BPS": "10001"}, "INVOICE_TAX_RATE_BPS is between 0 and 10000"),
        ({"INVOICE_GRACE_HOURS": "-1"}, "INVOICE_GRACE_HOURS cannot be negative"),
    ],
)
def test_bad_invoice_settings_stop_the_service(tmp_path, env, message):
    result = start(tmp_path, **env)
    assert result.returncode != 0 and message in result.stderr
