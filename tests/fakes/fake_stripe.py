"""localstripe on a loopback port, for tests, benchmarks and local runs.

    python -m tests.fakes.fake_stripe --port 8420

Adds to localstripe what the gateway's tests need of real Stripe:

* idempotent replays: a POST repeating an `Idempotency-Key` (same API key)
  gets the first answer again and changes nothing, as Stripe does;
* a request log (`GET /_config/requests`, `DELETE` clears it), so tests can
  count the writes that reached "Stripe" and read the keys they carried;
* one-off invoices as the current API makes them (a draft invoice, then
  invoice items added to it with `invoice=`), which localstripe 1.15 lacks:
  it only invoices subscriptions and pending items;
* what corrections need and localstripe 1.15 lacks: finalizing a draft
  (`POST /v1/invoices/<id>/finalize`), paying one out of band (`.../pay` with
  `paid_out_of_band=true`), voiding an open one-off invoice (localstripe's
  void needs a payment intent), and credit notes (`POST /v1/credit_notes`, `GET
  /v1/credit_notes[/<id>]`) with Stripe's rules: only open or paid invoices,
  at most what is left to credit, and for a paid invoice the credit, refund
  and out-of-band amounts must add up to the credit note's amount;
* injected faults (`POST /_config/faults` with `{"status": 500, "times": 1,
  "path": "regex", "method": "GET", "api_key": "sk_..."}`; `DELETE` clears),
  answered before localstripe sees the request.

Nothing is written to /tmp/localstripe.pickle: each server starts empty, so
parallel servers never share state. localstripe scans its whole store for
every list (and so for every charge's refunds, on every PaymentIntent read):
the store is indexed by object type here, or 5,000 intents take minutes.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.clock import pin_from_env


@dataclass
class FakeStripe:
    url: str
    process: subprocess.Popen

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
        return json.loads(text) if text else None

    def requests(self) -> list[dict[str, Any]]:
        """Every /v1 request since the last `clear_requests`, oldest first."""
        return self._call("GET", "/_config/requests")

    def writes(self) -> list[dict[str, Any]]:
        """POSTs and DELETEs that changed something (replays left out)."""
        return [
            r
            for r in self.requests()
            if r["method"] in ("POST", "DELETE") and not r["replayed"] and r["status"] < 400
        ]

    def clear_requests(self) -> None:
        self._call("DELETE", "/_config/requests")

    def add_fault(
        self,
        *,
        status: int,
        times: int = 1,
        path: str = ".*",
        method: str = "",
        api_key: str = "",
    ) -> None:
        self._call(
            "POST",
            "/_config/faults",
            {"status": status, "times": times, "path": path, "method": method, "api_key": api_key},
        )

    def clear_faults(self) -> None:
        self._call("DELETE", "/_config/faults")

    def flush(self) -> None:
        """Forget every object (customers, intents, ...), faults and logged requests."""
        self._call("DELETE", "/_config/data")
        self.clear_faults()
        self.clear_requests()


# `python -m tests.fakes.fake_stripe` runs from here, whatever the caller's directory.
PROJECT_ROOT = Path(__file__).resolve().parents[2]
MODULE = "tests.fakes.fake_stripe"


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start(*, port: int | None = None, timeout: float = 20.0) -> FakeStripe:
    """Start a server in a child process and wait until it answers."""
    port = port or free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fakes.fake_stripe",
            "--port",
            str(port),
            "--exit-with-parent",
        ],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = FakeStripe(url=f"http://127.0.0.1:{port}", process=process)
    deadline = time.monotonic() + timeout
    while True:
        try:
            server.requests()
            return server
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"fake Stripe did not start on port {port}") from None
            time.sleep(0.05)


# --- the server side (runs in the child process) ------------------------------------


def _api_key(request: Any) -> str:
    import base64

    header = request.headers.get("Authorization", "")
    kind, _, value = header.partition(" ")
    if kind == "Bearer":
        return value
    if kind == "Basic":
        return base64.b64decode(value).decode().split(":")[0]
    return ""


def _index_store() -> None:
    """No pickling to /tmp, and lists read an index by object type instead of
    scanning every stored object (same order: insertion order)."""
    from collections import defaultdict

    from localstripe import resources as r

    index: dict[str, dict[str, Any]] = defaultdict(dict)

    def setitem(self: Any, key: str, value: Any) -> None:
        dict.__setitem__(self, key, value)
        index[key.split(":", 1)[0]][key] = value

    def delitem(self: Any, key: str) -> None:
        dict.__delitem__(self, key)
        index[key.split(":", 1)[0]].pop(key, None)

    def clear(self: Any) -> None:
        dict.clear(self)
        index.clear()

    def list_all(cls: Any, url: Any, limit: Any = None, starting_after: Any = None, **kw: Any):
        if kw:
            raise r.UserError(400, "Unexpected " + ", ".join(kw.keys()))
        li = r.List(url, limit=limit, starting_after=starting_after)
        li._list = list(index[cls.object].values())
        return li

    r.Store.__setitem__ = setitem
    r.Store.__delitem__ = delitem
    r.Store.clear = clear
    r.Store.dump_to_disk = lambda self: None
    r.StripeObject._api_list_all = classmethod(list_all)


def _paid_out_of_band() -> None:
    """An invoice marked paid out of band is `paid` (localstripe knows only
    payment intents and zero totals)."""
    from localstripe import resources as r

    status = r.Invoice.status.fget

    def paid_or_status(self: Any) -> str:
        if getattr(self, "_paid_out_of_band", False) and not self._voided:
            return "paid"
        return status(self)

    r.Invoice.status = property(paid_or_status)


def build_app() -> Any:
    from aiohttp import web
    from localstripe import server as ls

    _index_store()
    _paid_out_of_band()
    log: list[dict[str, Any]] = []
    faults: list[dict[str, Any]] = []
    replays: dict[tuple[str, str], tuple[int, bytes]] = {}

    async def control(request: web.Request) -> web.StreamResponse | None:
        if request.path == "/_config/requests":
            if request.method == "DELETE":
                log.clear()
                return web.Response()
            return web.json_response(log)
        if request.path == "/_config/faults":
            if request.method == "DELETE":
                faults.clear()
            else:
                faults.append(await request.json())
            return web.Response()
        if request.path == "/_config/data" and request.method == "DELETE":
            replays.clear()
            credit_notes.clear()
        return None

    def take_fault(request: web.Request, key: str) -> int | None:
        for fault in faults:
            if fault["times"] <= 0:
                continue
            if fault.get("method") and fault["method"] != request.method:
                continue
            if fault.get("api_key") and fault["api_key"] != key:
                continue
            if not re.search(fault.get("path") or ".*", request.path):
                continue
            fault["times"] -= 1
            return int(fault["status"])
        return None

    async def one_off_invoices(request: web.Request, handler: Any) -> web.StreamResponse:
        from localstripe.errors import UserError
        from localstripe.resources import Invoice, InvoiceItem, InvoiceLineItem

        if request.method != "POST" or request.path not in ("/v1/invoices", "/v1/invoiceitems"):
            return await handler(request)
        data = await ls.get_post_data(request) or {}
        if request.path == "/v1/invoices":
            if data.get("subscription"):
                return await handler(request)
            if ls.get_api_key(request) is None:
                return UserError(401, "Unauthorized").to_response()
            for unsupported in (
                "pending_invoice_items_behavior",
                "auto_advance",
                "collection_method",
                "expand",
            ):
                data.pop(unsupported, None)
            try:
                invoice = Invoice(**data)
            except UserError as exc:
                return exc.to_response()
            invoice.lines._list = []
            return ls.json_response(invoice._export())
        response = await handler(request)
        if data.get("invoice") and response.status == 200:
            item = InvoiceItem._api_retrieve(json.loads(response.body)["id"])
            invoice = Invoice._api_retrieve(data["invoice"])
            invoice.lines._list.append(InvoiceLineItem(item))
            invoice.currency = item.currency
        return response

    credit_notes: dict[str, dict[str, Any]] = {}

    def _int(value: Any) -> int | None:
        try:
            return int(value) if value not in (None, "") else None
        except (TypeError, ValueError):
            return None

    async def corrections(request: web.Request) -> web.StreamResponse | None:
        """Finalize, pay out of band, credit notes (see the module docstring)."""
        from localstripe.errors import UserError
        from localstripe.resources import Invoice, random_id

        match = re.fullmatch(r"/v1/invoices/([^/]+)/(finalize|pay|void)", request.path)
        is_note = request.path.startswith("/v1/credit_notes")
        if not match and not is_note:
            return None
        if ls.get_api_key(request) is None:
            return UserError(401, "Unauthorized").to_response()
        data = (await ls.get_post_data(request) or {}) if request.method == "POST" else {}
        try:
            if match and request.method == "POST":
                invoice = Invoice._api_retrieve(match.group(1))
                if match.group(2) == "finalize":
                    if invoice.status != "draft":
                        raise UserError(400, f"Invoice is {invoice.status}, not a draft")
                    invoice._finalize()
                    return ls.json_response(invoice._export())
                if match.group(2) == "void":
                    if invoice.payment_intent:
                        return None  # localstripe's own void
                    if invoice.status != "open":
                        raise UserError(
                            400, f"You can only void open invoices, not {invoice.status}"
                        )
                    invoice._voided = True
                    invoice.status_transitions["voided_at"] = int(time.time())
                    return ls.json_response(invoice._export())
                if str(data.get("paid_out_of_band", "")).lower() != "true":
                    return None  # localstripe's own pay (with a payment method)
                if invoice.status not in ("draft", "open"):
                    raise UserError(400, f"Invoice is {invoice.status}")
                if invoice.status == "draft":
                    invoice._finalize()
                invoice._paid_out_of_band = True
                invoice.status_transitions["paid_at"] = int(time.time())
                return ls.json_response(invoice._export())
            if request.method == "GET":
                note_id = request.path.removeprefix("/v1/credit_notes").strip("/")
                if note_id:
                    if note_id not in credit_notes:
                        raise UserError(404, "Not Found")
                    return ls.json_response(credit_notes[note_id])
                wanted = request.query.get("invoice")
                found = [n for n in credit_notes.values() if not wanted or n["invoice"] == wanted]
                return ls.json_response(
                    {"object": "list", "data": found, "has_more": False, "url": request.path}
                )
            if request.method != "POST" or request.path != "/v1/credit_notes":
                return None
            invoice = Invoice._api_retrieve(str(data.get("invoice", "")))
            status = invoice.status
            if status not in ("open", "paid"):
                raise UserError(400, f"You can only credit open or paid invoices, not {status}")
            amount = _int(data.get("amount"))
            credited = sum(n["amount"] for n in credit_notes.values() if n["invoice"] == invoice.id)
            left = invoice.total - credited
            if amount is None or amount <= 0 or amount > left:
                raise UserError(400, f"The credit amount must be between 1 and {left}")
            parts = {k: _int(data.get(k)) or 0 for k in ("credit_amount", "refund_amount")}
            parts["out_of_band_amount"] = _int(data.get("out_of_band_amount")) or 0
            if status == "paid" and sum(parts.values()) != amount:
                raise UserError(
                    400,
                    "For a paid invoice, credit_amount, refund_amount and out_of_band_amount "
                    "must add up to the credit note's amount",
                )
            note = {
                "id": "cn_" + random_id(14),
                "object": "credit_note",
                "invoice": invoice.id,
                "customer": invoice.customer,
                "amount": amount,
                "currency": invoice.currency,
                "memo": data.get("memo") or None,
                "metadata": data.get("metadata") or {},
                "status": "issued",
                "type": "post_payment" if status == "paid" else "pre_payment",
                "created": int(time.time()),
                **parts,
            }
            credit_notes[note["id"]] = note
            return ls.json_response(note)
        except UserError as exc:
            return exc.to_response()

    @web.middleware
    async def harness(request: web.Request, handler: Any) -> web.StreamResponse:
        answered = await control(request)
        if answered is not None:
            return answered
        if not request.path.startswith("/v1/"):
            return await handler(request)
        key = _api_key(request)
        idempotency_key = request.headers.get("Idempotency-Key", "")
        entry = {
            "method": request.method,
            "path": request.path,
            "api_key": key,
            "idempotency_key": idempotency_key,
            "replayed": False,
            "status": 0,
        }
        log.append(entry)
        status = take_fault(request, key)
        if status is not None:
            entry["status"] = status
            error = {"error": {"type": "api_error", "message": f"injected fault {status}"}}
            if status == 429:
                error["error"] = {"type": "rate_limit_error", "message": "injected 429"}
            return web.json_response(error, status=status)
        if request.method == "POST" and idempotency_key:
            seen = replays.get((key, idempotency_key))
            if seen is not None:
                entry["replayed"] = True
                entry["status"] = seen[0]
                return web.Response(
                    status=seen[0],
                    body=seen[1],
                    content_type="application/json",
                    headers={"Idempotent-Replayed": "true"},
                )
        response = await corrections(request) or await one_off_invoices(request, handler)
        entry["status"] = response.status
        if request.method == "POST" and idempotency_key and response.status < 500:
            body = response.body if isinstance(response.body, bytes) else b""
            replays[(key, idempotency_key)] = (response.status, body)
        return response

    ls.app.middlewares.insert(0, harness)
    return ls.app


def main() -> None:
    import argparse

    from aiohttp import web

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8420)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="stop when the process that started this one is gone (a killed test run)",
    )
    args = parser.parse_args()
    if os.environ.get("TEST_CLOCK"):
        # Started by a test run with a pinned clock: read the same day as the tests.
        pin_from_env()
    app = build_app()
    if args.exit_with_parent:
        parent = os.getppid()
        tasks: list[Any] = []

        async def watch_parent(app: Any) -> None:
            import asyncio

            async def watch() -> None:
                while os.getppid() == parent:
                    await asyncio.sleep(1)
                os._exit(0)

            tasks.append(asyncio.ensure_future(watch()))

        app.on_startup.append(watch_parent)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
