import pytest

from notifications.models import EmailStatus, OutboundEmail
from notifications.services import EmailDraft, queue_bulk, queue_email, render_email
from tests.factories import OrganizationFactory, OutboundEmailFactory

pytestmark = pytest.mark.django_db


def draft(key: str, **overrides) -> EmailDraft:
    values = {
        "to": "billing@example.com",
        "kind": "tests.notice",
        "dedupe_key": key,
        "subject": "Notice",
        "body_text": "Hello.",
        "body_html": "<p>Hello.</p>",
    } | overrides
    return EmailDraft(**values)


def test_queue_bulk_queues_one_row_per_recipient():
    org = OrganizationFactory()

    queued = queue_bulk(
        emails=[
            draft("a", to="a@example.com", organization_id=org.pk),
            draft("b", to="b@example.com"),
        ]
    )

    assert queued == 2
    rows = {e.to: e for e in OutboundEmail.objects.all()}
    assert set(rows) == {"a@example.com", "b@example.com"}
    assert rows["a@example.com"].organization == org
    assert all(e.status == EmailStatus.QUEUED and e.attempts == 0 for e in rows.values())


def test_queue_bulk_skips_dedupe_keys_already_queued():
    OutboundEmailFactory(dedupe_key="seen", subject="first")

    queued = queue_bulk(emails=[draft("seen", subject="second"), draft("new"), draft("new")])

    assert queued == 1
    assert OutboundEmail.objects.get(dedupe_key="seen").subject == "first"
    assert OutboundEmail.objects.filter(dedupe_key="new").count() == 1


def test_queue_email_renders_subject_text_and_html_from_templates():
    context = {
        "organization_name": "Acme <Corp>",
        "count": "1",
        "single": True,
        "slot": "2026-03-01 12:00",
        "grace_days": "7",
        "suspend_after": "2026-03-08 12:00",
    }

    assert queue_email(
        to="pay@acme.example",
        kind="subscriptions.expired",
        dedupe_key="k1",
        template="subscriptions_expired",
        context=context,
    )
    assert not queue_email(
        to="pay@acme.example",
        kind="subscriptions.expired",
        dedupe_key="k1",
        template="subscriptions_expired",
        context=context,
    )

    email = OutboundEmail.objects.get()
    assert email.subject == "A subscription of Acme <Corp> has expired"
    assert "One of your subscriptions" in email.body_text
    assert "Hello Acme <Corp>," in email.body_text
    assert "Acme &lt;Corp&gt;" in email.body_html


def test_rendered_subject_is_one_line():
    rendered = render_email(
        template="subscriptions_suspended",
        context={"organization_name": "Globex", "count": "3", "single": False},
    )
    assert rendered.subject == "3 subscriptions of Globex are suspended"


def test_database_rejects_a_duplicate_dedupe_key():
    from django.db import IntegrityError, transaction

    OutboundEmailFactory(dedupe_key="once")
    with pytest.raises(IntegrityError), transaction.atomic():
        OutboundEmailFactory(dedupe_key="once")


def test_database_rejects_an_unknown_status():
    from django.db import IntegrityError, transaction

    email = OutboundEmailFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        OutboundEmail.objects.filter(pk=email.pk).update(status="lost")
