"""Rendering email templates: `templates/emails/<name>/`, in Python or in SQL.

`render_sql` renders a template once with holes the database fills per row,
so one INSERT ... SELECT can queue 100,000 emails whose text is still exactly
what Django renders (see `services.queueing.queue_from_queryset`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.template.loader import get_template


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    body_text: str
    body_html: str


class EmailTemplate:
    """`templates/emails/<name>/{subject.txt,body.txt,body.html}`, loaded once.

    Jobs that queue thousands of emails render through one instance, so the
    templates are looked up and compiled once, not per email.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._subject = get_template(f"emails/{name}/subject.txt")
        self._text = get_template(f"emails/{name}/body.txt")
        self._html = get_template(f"emails/{name}/body.html")

    def render(self, context: Mapping[str, Any]) -> RenderedEmail:
        context = dict(context)
        subject = " ".join(self._subject.render(context).split())
        return RenderedEmail(
            subject=subject[:255],
            body_text=self._text.render(context),
            body_html=self._html.render(context),
        )


def render_email(*, template: str, context: Mapping[str, Any]) -> RenderedEmail:
    return EmailTemplate(template).render(context)


_SENTINEL = "QQFIELD{}QQ"
_SENTINEL_RE = re.compile(r"QQFIELD(\w+?)QQ")


def sql_html_escape(expr: str) -> str:
    """SQL for Django's `escape()` of a text expression (same five characters)."""
    for char, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;")):
        expr = f"replace({expr}, '{char}', '{entity}')"
    return f"replace({expr}, '''', '&#x27;')"


@dataclass(frozen=True)
class SqlRendered:
    """A template rendered into SQL expressions: literal pieces (parameters)
    around per-row column expressions."""

    subject: tuple[str, list[str]]
    body_text: tuple[str, list[str]]
    body_html: tuple[str, list[str]]


def render_sql(
    template: EmailTemplate, *, context: Mapping[str, Any], fields: Mapping[str, str]
) -> SqlRendered:
    """Render `template` once, with each of `fields` (name -> SQL text expression)
    left as a hole the database fills per row.

    Lets a job queue 100,000 emails with one INSERT ... SELECT while the text
    stays exactly what Django would render, as long as the templates print the
    fields without filters (HTML bodies get the same escaping, done in SQL).
    """
    holes = {name: _SENTINEL.format(name) for name in fields}
    rendered = template.render({**context, **holes})

    def build(text: str, *, html: bool, limit: int | None = None) -> tuple[str, list[str]]:
        sql_parts: list[str] = []
        params: list[str] = []
        pos = 0
        for match in _SENTINEL_RE.finditer(text):
            if match.start() > pos:
                sql_parts.append("%s")
                params.append(text[pos : match.start()])
            expr = f"({fields[match.group(1)]})"
            sql_parts.append(sql_html_escape(expr) if html else expr)
            pos = match.end()
        if pos < len(text) or not sql_parts:
            sql_parts.append("%s")
            params.append(text[pos:])
        sql = "(" + " || ".join(sql_parts) + ")"
        return (f"substr({sql}, 1, {limit})" if limit else sql), params

    return SqlRendered(
        subject=build(rendered.subject, html=False, limit=255),
        body_text=build(rendered.body_text, html=False),
        body_html=build(rendered.body_html, html=True),
    )
