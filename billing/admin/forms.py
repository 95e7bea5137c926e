"""Forms of the billing admin's actions. Money is typed in major units (12.50)
and converted with the invoice's currency; the services check the rest and
their ValueErrors become form errors."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from billing.models import ChargeModel, Invoice, InvoiceLine, PlanMetricPrice
from billing.services.pdf import minor_units
from billing.services.pricing import Tier, validate_price


def _minor(amount: Decimal, currency: str) -> int:
    try:
        return minor_units(amount, currency)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


class ManualLineForm(forms.Form):
    description = forms.CharField(max_length=300)
    amount = forms.DecimalField(
        max_digits=14,
        decimal_places=2,
        help_text="In the invoice's currency; negative for a discount.",
    )
    quantity = forms.IntegerField(min_value=1, initial=1)
    unit = forms.CharField(max_length=64, required=False)
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), help_text="Required; audited."
    )

    def __init__(self, *args: Any, invoice: Invoice, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.invoice = invoice

    def clean_amount(self) -> int:
        return _minor(self.cleaned_data["amount"], self.invoice.currency)


class ReasonForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), help_text="Required; audited."
    )


class CreditForm(forms.Form):
    """A partial credit: one line, or an amount before tax."""

    line = forms.ModelChoiceField(
        queryset=InvoiceLine.objects.none(), required=False, help_text="Credit this line in full."
    )
    amount = forms.DecimalField(
        max_digits=14,
        decimal_places=2,
        required=False,
        min_value=Decimal("0.01"),
        help_text="Or an amount before tax, in the invoice's currency.",
    )
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}), help_text="Required; audited."
    )

    def __init__(self, *args: Any, invoice: Invoice, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.invoice = invoice
        self.fields["line"].queryset = invoice.lines.filter(amount_minor__gt=0)
        self.fields["line"].label_from_instance = lambda line: (
            f"{line.description} ({line.amount_minor / 100:,.2f} {invoice.currency})"
        )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if (data.get("line") is None) == (data.get("amount") is None):
            raise ValidationError("Choose a line or type an amount (one of them).")
        if data.get("amount") is not None:
            data["amount_minor"] = _minor(data["amount"], self.invoice.currency)
        return data


class PlanMetricPriceForm(forms.ModelForm):
    class Meta:
        model = PlanMetricPrice
        fields = ["plan", "metric", "charge_model", "unit_price_minor", "package_size"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        model = data.get("charge_model")
        if model == ChargeModel.PACKAGE and (data.get("package_size") or 0) < 1:
            self.add_error("package_size", "A package holds at least 1 unit.")
        return data


class TierFormSet(forms.BaseInlineFormSet):
    """The tiers are checked together (start at 0, no overlap, no gap, last
    open-ended) with the same rules as billing.services.pricing."""

    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return
        tiers = [
            Tier(
                form.cleaned_data["first_unit"],
                form.cleaned_data.get("last_unit"),
                form.cleaned_data["unit_price_minor"],
            )
            for form in self.forms
            if form.cleaned_data and not form.cleaned_data.get("DELETE")
        ]
        parent = self.instance
        model = getattr(parent, "charge_model", None)
        try:
            validate_price(
                charge_model=model,
                unit_price_minor=parent.unit_price_minor or 0,
                package_size=parent.package_size or 1,
                tiers=tiers,
            )
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        self.tiers = tiers
