"""The admin site: Django's, with an optional second factor for staff.

A staff user with a confirmed TOTP device (django-otp) must give its current
code at login; with ADMIN_REQUIRE_2FA every staff user must, and a session
not verified by a device does not reach the admin. Failed logins count
towards django-axes's lockout like any other.
"""

from __future__ import annotations

from django import forms
from django.conf import settings
from django.contrib.admin import AdminSite
from django.contrib.admin.forms import AdminAuthenticationForm
from django.http import HttpRequest
from django_otp import devices_for_user
from django_otp.forms import OTPAuthenticationFormMixin
from django_otp.plugins.otp_totp.models import TOTPDevice


class StaffLoginForm(OTPAuthenticationFormMixin, AdminAuthenticationForm):
    otp_device = forms.CharField(required=False, widget=forms.HiddenInput)
    otp_token = forms.CharField(
        required=False,
        label="Authenticator code",
        help_text="Only if you set up two-factor login.",
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}),
    )
    otp_challenge = forms.CharField(required=False, widget=forms.HiddenInput)

    def _chosen_device(self, user):
        """The user's authenticator: staff hold one TOTP device, so the form
        asks for no device choice (django-otp's would be a drop-down)."""
        return (
            super()._chosen_device(user)
            or TOTPDevice.objects.devices_for_user(user, confirmed=True).first()
        )

    def clean(self):
        self.cleaned_data = super().clean()
        user = self.get_user()
        if user is not None and (
            settings.ADMIN_REQUIRE_2FA or any(devices_for_user(user, confirmed=True))
        ):
            self.clean_otp(user)
        return self.cleaned_data


class BackofficeAdminSite(AdminSite):
    login_form = StaffLoginForm
    login_template = "admin/login_2fa.html"

    def has_permission(self, request: HttpRequest) -> bool:
        if not super().has_permission(request):
            return False
        if settings.ADMIN_REQUIRE_2FA:
            return bool(getattr(request.user, "is_verified", lambda: False)())
        return True
