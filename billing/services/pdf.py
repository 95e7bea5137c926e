"""Invoice PDFs with weasyprint, many at a time.

What makes weasyprint slow per invoice is mostly per-document set-up and the
style cascade, so: the stylesheet is parsed and fonts are configured once per
process, a small user-agent stylesheet replaces weasyprint's full HTML5 one
(templates/invoices/ua.css), and a chunk of invoices is laid out as ONE
document, one invoice per `<section>` starting on a new page, whose pages are
split back into one PDF per invoice (each section's first page carries its
anchor). Measured (CPU, bench invoice_pdf): ~75 ms for one invoice rendered
naively, ~35 ms with the cached assets and small sheet, a little less per
invoice in a chunk. If a chunk's document fails, its invoices are rendered one
by one, so one bad invoice costs only its own PDF.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.template.loader import get_template

logger = logging.getLogger(__name__)

ANCHOR_PREFIX = "invoice-"
ZERO_DECIMAL_CURRENCIES = frozenset({"BIF", "CLP", "JPY", "KRW", "PYG", "VND", "XAF", "XOF"})


def format_money(amount_minor: int, currency: str) -> str:
    """12345 EUR -> "123.45 EUR"; zero-decimal currencies have no fraction."""
    if currency in ZERO_DECIMAL_CURRENCIES:
        return f"{amount_minor:,} {currency}"
    sign = "-" if amount_minor < 0 else ""
    whole, cents = divmod(abs(amount_minor), 100)
    return f"{sign}{whole:,}.{cents:02d} {currency}"


def line_detail(quantity: int, unit_price_minor: int, currency: str) -> str:
    """ "3,001 x 0.01 EUR" (a multiplication sign); empty for one unit (a plan fee)."""
    if quantity == 1:
        return ""
    return f"{quantity:,} \u00d7 {format_money(unit_price_minor, currency)}"


@dataclass(frozen=True)
class PdfLine:
    description: str
    quantity: int
    unit_price_minor: int
    amount_minor: int


@dataclass(frozen=True)
class PdfInvoice:
    """What the template shows, detached from the ORM (dry runs and the bench use it too)."""

    key: str  # unique in one document: the invoice id
    number: str
    organization_key: str
    organization_name: str
    billing_email: str
    issue_date: str
    period_label: str
    currency: str
    subtotal_minor: int
    tax_minor: int
    total_minor: int
    lines: Sequence[PdfLine]

    def context(self) -> dict[str, Any]:
        money = lambda value: format_money(value, self.currency)  # noqa: E731
        return {
            "key": self.key,
            "number": self.number,
            "organization_key": self.organization_key,
            "organization_name": self.organization_name,
            "billing_email": self.billing_email,
            "issue_date": self.issue_date,
            "period_label": self.period_label,
            "currency": self.currency,
            "subtotal": money(self.subtotal_minor),
            "tax": money(self.tax_minor),
            "total": money(self.total_minor),
            "lines": [
                {
                    "description": line.description,
                    "detail": line_detail(line.quantity, line.unit_price_minor, self.currency),
                    "amount": money(line.amount_minor),
                }
                for line in self.lines
            ],
        }


@lru_cache(maxsize=1)
def _assets() -> tuple[Any, Any, Any]:
    """The parsed stylesheets and font configuration, once per process."""
    from weasyprint import CSS
    from weasyprint.text.fonts import FontConfiguration

    fonts = FontConfiguration()
    css = CSS(string=get_template("invoices/invoice.css").render({}), font_config=fonts)
    user_agent = CSS(string=get_template("invoices/ua.css").render({}))
    return css, user_agent, fonts


@lru_cache(maxsize=1)
def _invoice_html() -> Any:
    """weasyprint's HTML with the small user-agent sheet of templates/invoices/ua.css.

    `_ua_stylesheets` is weasyprint's own hook (pinned version); without it
    the full HTML5 sheet applies, which renders the same invoice more slowly.
    """
    from weasyprint import HTML

    class InvoiceHTML(HTML):
        def _ua_stylesheets(self, forms: bool = False) -> list[Any]:
            return [_assets()[1]]

    return InvoiceHTML


def _html(invoices: Sequence[PdfInvoice]) -> str:
    return get_template("invoices/document.html").render(
        {
            "invoices": [invoice.context() for invoice in invoices],
            "issuer_name": settings.INVOICE_ISSUER_NAME,
            "issuer_address": settings.INVOICE_ISSUER_ADDRESS,
        }
    )


def _render_document(invoices: Sequence[PdfInvoice]) -> dict[str, bytes]:
    css, _, fonts = _assets()
    html = _invoice_html()(string=_html(invoices))
    document = html.render(stylesheets=[css], font_config=fonts)
    starts: list[tuple[int, str]] = []
    for number, page in enumerate(document.pages):
        for anchor in page.anchors:
            if anchor.startswith(ANCHOR_PREFIX):
                starts.append((number, anchor[len(ANCHOR_PREFIX) :]))
    if [key for _, key in starts] != [invoice.key for invoice in invoices]:
        raise RuntimeError("invoice sections and pages do not line up")
    ends = [number for number, _ in starts[1:]] + [len(document.pages)]
    return {
        key: document.copy(document.pages[start:end]).write_pdf()
        for (start, key), end in zip(starts, ends, strict=True)
    }


def render_one(invoice: PdfInvoice) -> bytes:
    """One invoice, one document (the slow way; used as the fallback)."""
    return _render_document([invoice])[invoice.key]


def render_many(invoices: Sequence[PdfInvoice]) -> tuple[dict[str, bytes], dict[str, Exception]]:
    """PDFs by invoice key, and the errors of the ones that could not be rendered."""
    if not invoices:
        return {}, {}
    try:
        return _render_document(invoices), {}
    except Exception as exc:
        if len(invoices) == 1:
            return {}, {invoices[0].key: exc}
        logger.exception("rendering %s invoices as one document failed; one by one", len(invoices))
    pdfs: dict[str, bytes] = {}
    errors: dict[str, Exception] = {}
    for invoice in invoices:
        try:
            pdfs[invoice.key] = render_one(invoice)
        except Exception as exc:
            errors[invoice.key] = exc
    return pdfs, errors
