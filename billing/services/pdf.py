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

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

from django.conf import settings
from django.template.loader import get_template

logger = logging.getLogger(__name__)

ANCHOR_PREFIX = "invoice-"
ZERO_DECIMAL_CURRENCIES = frozenset({"BIF", "CLP", "JPY", "KRW", "PYG", "VND", "XAF", "XOF"})


def format_money(amount_minor: int, currency: str) -> str:
    """12345 EUR -> "123.45 EUR"; zero-decimal currencies have no fraction."""
    sign = "-" if amount_minor < 0 else ""
    if currency in ZERO_DECIMAL_CURRENCIES:
        return f"{sign}{abs(amount_minor):,} {currency}"
    whole, cents = divmod(abs(amount_minor), 100)
    return f"{sign}{whole:,}.{cents:02d} {currency}"


def minor_units(amount: Decimal, currency: str) -> int:
    """A major-unit amount typed by a person (12.34 EUR) in minor units (1234);
    a ValueError if it has more decimals than the currency."""
    exponent = 0 if currency in ZERO_DECIMAL_CURRENCIES else 2
    scaled = Decimal(amount) * (10**exponent)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} {currency} has more than {exponent} decimals")
    return int(scaled)


def format_rate(bps: int) -> str:
    """2000 -> "20%", 1950 -> "19.5%", 725 -> "7.25%"."""
    whole, rest = divmod(bps, 100)
    return f"{whole}%" if not rest else f"{whole}.{rest:02d}".rstrip("0") + "%"


@dataclass(frozen=True)
class PdfLine:
    description: str
    quantity: int
    unit: str
    unit_price_minor: int
    amount_minor: int


@dataclass(frozen=True)
class PdfInvoice:
    """What the template shows, detached from the ORM (dry runs and the bench
    use it too). Credit notes are documents of the same shape."""

    key: str  # unique in one document: the invoice id
    number: str
    organization_key: str
    organization_name: str  # the buyer's legal name
    billing_email: str
    issue_date: str
    period_label: str
    currency: str
    subtotal_minor: int
    tax_minor: int
    total_minor: int
    lines: Sequence[PdfLine]
    title: str = "Invoice"
    buyer_address: str = ""
    buyer_country: str = ""
    buyer_tax_id: str = ""
    due_date: str = ""
    payment_terms: str = ""
    tax_label: str = "Tax"
    notes: Sequence[str] = ()
    total_label: str = "Total due"

    def context(self) -> dict[str, Any]:
        """Multi-line blocks come as text with newlines (the template prints them
        `pre-line`: fewer boxes to lay out than one element per line)."""
        money = lambda value: format_money(value, self.currency)  # noqa: E731
        buyer = [
            self.buyer_address,
            self.buyer_country,
            f"Tax id {self.buyer_tax_id}" if self.buyer_tax_id else "",
            f"{self.billing_email} \u00b7 {self.organization_key}",
        ]
        meta = f"Issue date {self.issue_date}"
        if self.due_date:
            meta += f" \u00b7 Due date {self.due_date}"
        meta += f" \u00b7 Period {self.period_label}"
        if self.payment_terms:
            meta += f"\n{self.payment_terms}"
        return {
            "key": self.key,
            "title": self.title,
            "number": self.number,
            "organization_name": self.organization_name,
            "buyer_lines": "\n".join(part for part in buyer if part),
            "meta": meta,
            "subtotal": money(self.subtotal_minor),
            "tax_label": self.tax_label,
            "tax": money(self.tax_minor),
            "total_label": self.total_label,
            "total": money(self.total_minor),
            "notes": list(self.notes),
            "lines": [
                {
                    "description": line.description,
                    "quantity": quantity_text(line.quantity, line.unit),
                    "unit_price": money(line.unit_price_minor),
                    "amount": money(line.amount_minor),
                }
                for line in self.lines
            ],
        }


def quantity_text(quantity: int, unit: str) -> str:
    """ "1,500 calls", "1 month", "2 \u00d7 1,000 calls" (a unit that is itself a count)."""
    if not unit:
        return f"{quantity:,}"
    if unit[0].isdigit():
        return f"{quantity:,} \u00d7 {unit}"
    return f"{quantity:,} {unit}"


def seller() -> dict[str, str]:
    """The seller block, from settings (INVOICE_SELLER_*)."""
    logo = settings.INVOICE_SELLER_LOGO
    tax_id = settings.INVOICE_SELLER_TAX_ID
    lines = [
        settings.INVOICE_SELLER_ADDRESS,
        settings.INVOICE_SELLER_COUNTRY,
        f"Tax id {tax_id}" if tax_id else "",
        settings.INVOICE_SELLER_EMAIL,
    ]
    return {
        "name": settings.INVOICE_SELLER_NAME,
        "lines": "\n".join(line for line in lines if line),
        "logo": Path(logo).resolve().as_uri() if logo else "",
    }


@lru_cache(maxsize=1)
def _assets() -> tuple[Any, Any, Any]:
    """The parsed stylesheets and font configuration, once per process."""
    # Lazy: weasyprint loads Pango and its fonts (about a second); only
    # processes that render a PDF pay for it.
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
    # Lazy: weasyprint loads Pango and its fonts (see _assets).
    from weasyprint import HTML

    class InvoiceHTML(HTML):
        def _ua_stylesheets(self, forms: bool = False) -> list[Any]:
            return [_assets()[1]]

    return InvoiceHTML


def _html(invoices: Sequence[PdfInvoice], *, paged: bool = False) -> str:
    return get_template("invoices/document.html").render(
        {
            "invoices": [invoice.context() for invoice in invoices],
            "seller": seller(),
            "paged": paged,
        }
    )


def _write(document: Any, pages: Sequence[Any], title: str) -> bytes:
    """Some pages as a PDF of their own, titled (the PDF metadata) `title`."""
    part = document.copy(list(pages))
    part.metadata = copy.copy(document.metadata)
    part.metadata.title = title
    return part.write_pdf()


def _render_document(invoices: Sequence[PdfInvoice], *, paged: bool = False) -> dict[str, bytes]:
    """One weasyprint document for the invoices, split into one PDF each.

    Page numbers ("Page 2 of 3") are page margin boxes, which cost time on
    every page, and the document-wide page counter would run across
    invoices: so an invoice that runs over one page is rendered once more on
    its own with them (`paged`), which few invoices need.
    """
    css, _, fonts = _assets()
    html = _invoice_html()(string=_html(invoices, paged=paged))
    document = html.render(stylesheets=[css], font_config=fonts)
    starts: list[tuple[int, str]] = []
    seen: set[str] = set()
    for number, page in enumerate(document.pages):
        for anchor in page.anchors:
            # A section over several pages has its anchor on each: its first counts.
            if anchor.startswith(ANCHOR_PREFIX) and anchor not in seen:
                seen.add(anchor)
                starts.append((number, anchor[len(ANCHOR_PREFIX) :]))
    if [key for _, key in starts] != [invoice.key for invoice in invoices]:
        raise RuntimeError("invoice sections and pages do not line up")
    ends = [number for number, _ in starts[1:]] + [len(document.pages)]
    by_key = {invoice.key: invoice for invoice in invoices}
    pdfs: dict[str, bytes] = {}
    for (start, key), end in zip(starts, ends, strict=True):
        if end - start > 1 and not paged:
            pdfs[key] = _render_document([by_key[key]], paged=True)[key]
        else:
            pdfs[key] = _write(document, document.pages[start:end], by_key[key].number)
    return pdfs


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
