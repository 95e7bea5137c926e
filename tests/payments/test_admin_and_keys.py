"""Provider keys: encrypted at rest, masked in the admin, rotatable."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.urls import reverse

from audit.models import AuditTrail
from payments import crypto
from payments.checks import field_encryption_key_set
from payments.gateway import gateway_for
from payments.models import PaymentProviderConfig
from payments.services import set_provider_keys
from tests.factories import OrganizationFactory, PaymentFactory, PaymentProviderConfigFactory

pytestmark = pytest.mark.django_db
SECRET = "sk_live_51HxYzSECRETSECRETabcd"


def test_secret_keys_are_encrypted_at_rest_and_audited_without_the_key():
    org = OrganizationFactory()
    config = set_provider_keys(
        organization=org, actor="user:admin", secret_key=SECRET, enabled=True
    )

    assert SECRET not in config.secret_key_encrypted
    assert crypto.decrypt(config.secret_key_encrypted) == SECRET
    assert config.masked_secret_key == "sk_live_…abcd"
    audit = AuditTrail.objects.get(object_type="payments.paymentproviderconfig")
    assert SECRET not in str(audit.changes)
    assert audit.changes["secret_key"] == "changed"


def test_the_admin_shows_keys_masked_only(admin_client):
    config = PaymentProviderConfigFactory(secret_key=SECRET)

    listing = admin_client.get(reverse("admin:payments_paymentproviderconfig_changelist"))
    page = admin_client.get(
        reverse("admin:payments_paymentproviderconfig_change", args=[config.pk])
    )

    for response in (listing, page):
        assert response.status_code == 200
        body = response.content.decode()
        assert SECRET not in body
        assert "sk_live_…abcd" in body
        assert config.secret_key_encrypted not in body


def test_the_admin_form_sets_keys_encrypted(admin_client):
    org = OrganizationFactory()
    response = admin_client.post(
        reverse("admin:payments_paymentproviderconfig_add"),
        {
            "organization": org.pk,
            "provider": "stripe",
            "publishable_key": "pk_live_x",
            "enabled": "on",
            "secret_key": SECRET,
            "webhook_secret": "whsec_123",
            "requests_per_second": "",
        },
    )

    assert response.status_code == 302, response.content.decode()[:2000]
    config = PaymentProviderConfig.objects.get(organization=org)
    assert crypto.decrypt(config.secret_key_encrypted) == SECRET
    assert crypto.decrypt(config.webhook_secret_encrypted) == "whsec_123"
    assert config.enabled


def test_enabling_without_a_key_is_refused(admin_client):
    org = OrganizationFactory()
    response = admin_client.post(
        reverse("admin:payments_paymentproviderconfig_add"),
        {"organization": org.pk, "provider": "stripe", "enabled": "on"},
    )
    assert response.status_code == 200
    assert not PaymentProviderConfig.objects.exists()


def test_keys_can_be_rotated(settings):
    config = PaymentProviderConfigFactory(secret_key=SECRET)
    old_key = settings.FIELD_ENCRYPTION_KEY[0]
    new_key = Fernet.generate_key().decode()

    settings.FIELD_ENCRYPTION_KEY = [new_key, old_key]  # new first: encrypts; both decrypt
    assert gateway_for(config.organization) is not None
    call_command("reencrypt_secrets")

    settings.FIELD_ENCRYPTION_KEY = [new_key]  # the old key dropped
    config.refresh_from_db()
    assert crypto.decrypt(config.secret_key_encrypted) == SECRET


def test_a_secret_no_key_decrypts_is_reported_not_leaked(settings):
    config = PaymentProviderConfigFactory(secret_key=SECRET)
    settings.FIELD_ENCRYPTION_KEY = [Fernet.generate_key().decode()]

    with pytest.raises(crypto.SecretUnreadable):
        crypto.decrypt(config.secret_key_encrypted)


def test_the_service_refuses_to_start_with_a_derived_key_unless_debug(settings):
    settings.FIELD_ENCRYPTION_KEY_DERIVED = True
    settings.DEBUG = False
    assert [e.id for e in field_encryption_key_set()] == ["payments.E001"]
    settings.DEBUG = True
    assert field_encryption_key_set() == []
    settings.FIELD_ENCRYPTION_KEY_DERIVED = False
    settings.DEBUG = False
    assert field_encryption_key_set() == []


def test_payment_admin_lists_and_searches(admin_client):
    payment = PaymentFactory()
    url = reverse("admin:payments_payment_changelist")
    assert admin_client.get(url).status_code == 200
    assert admin_client.get(url, {"q": payment.provider_reference}).status_code == 200
