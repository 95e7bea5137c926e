"""A Django form made from a job's typed parameters (jobs.params.Param).

Reused wherever staff type parameters: "Run now…" here, per-tenant schedules
elsewhere. Each field is the parameter's type (int with its range, bool,
date, datetime, str, decimal, choices); `clean()` runs the platform's own
coercion, so the form refuses exactly what the runner would refuse, as form
errors, before anything is recorded.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django import forms

from jobs.params import Param, ParamError, coerce_value, params_to_json

FIELD_PREFIX = "param_"


def field_name(param: Param) -> str:
    """Prefixed, so a parameter called `tenant` or `dry_run` meets no other field."""
    return f"{FIELD_PREFIX}{param.name}"


def label_for(param: Param) -> str:
    return param.name.replace("_", " ").capitalize()


def _initial(param: Param) -> Any:
    if param.required or param.default is None:
        return None
    return param.default


def field_for(param: Param) -> forms.Field:
    """The form field that holds one parameter."""
    common: dict[str, Any] = {
        "label": label_for(param),
        "required": param.required and param.type is not bool,
        "initial": _initial(param),
        "help_text": _help(param),
    }
    if param.choices is not None:
        choices = [(v, str(v)) for v in param.choices.values]
        if not param.required:
            choices = [("", "(default)"), *choices]
        return forms.TypedChoiceField(choices=choices, coerce=str, empty_value="", **common)
    if param.type is bool:
        return forms.BooleanField(**common)
    if param.type is int:
        bounds = param.range
        return forms.IntegerField(
            min_value=bounds.ge if bounds else None,
            max_value=bounds.le if bounds else None,
            **common,
        )
    if param.type is float:
        bounds = param.range
        return forms.FloatField(
            min_value=bounds.ge if bounds else None,
            max_value=bounds.le if bounds else None,
            **common,
        )
    if param.type is Decimal:
        return forms.DecimalField(**common)
    if param.type is datetime:
        return forms.DateTimeField(
            widget=forms.DateTimeInput(attrs={"type": "datetime-local", "step": "1"}), **common
        )
    if param.type is date:
        return forms.DateField(widget=forms.DateInput(attrs={"type": "date"}), **common)
    return forms.CharField(max_length=2000, strip=False, **common)


def _help(param: Param) -> str:
    parts = []
    if param.range is not None:
        if param.range.ge is not None:
            parts.append(f"at least {param.range.ge}")
        if param.range.le is not None:
            parts.append(f"at most {param.range.le}")
    if param.type is datetime:
        parts.append("UTC")
    if not param.required and param.type is not bool:
        parts.append("empty: the job's default" + (f" ({param.default})" if param.default else ""))
    return "; ".join(parts)


class ParamFormMixin:
    """Adds one field per parameter to a form and collects them as job params."""

    job_params: tuple[Param, ...] = ()

    def add_param_fields(self, params: tuple[Param, ...]) -> None:
        self.job_params = params
        for param in params:
            self.fields[field_name(param)] = field_for(param)  # type: ignore[attr-defined]

    def clean_params(self) -> dict[str, Any]:
        """The values given (blank optional ones left to the job's default),
        coerced as the runner coerces them; a refusal is the field's error."""
        values: dict[str, Any] = {}
        cleaned = self.cleaned_data  # type: ignore[attr-defined]
        for param in self.job_params:
            name = field_name(param)
            if name not in cleaned:
                continue  # the field already has its error
            value = cleaned[name]
            if value in (None, "") and param.type is not bool:
                if param.required:
                    self.add_error(name, "This field is required.")  # type: ignore[attr-defined]
                continue
            if param.type is str and param.choices is None and value == "" and not param.required:
                continue
            try:
                values[param.name] = coerce_value(param, value)
            except ParamError as exc:
                self.add_error(name, str(exc))  # type: ignore[attr-defined]
        return values


class ParamForm(ParamFormMixin, forms.Form):
    """Just the parameters; `params()` gives them as stored on a run."""

    def __init__(self, *args: Any, params: tuple[Param, ...], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.add_param_fields(params)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        cleaned["params"] = self.clean_params()
        return cleaned

    def params(self) -> dict[str, Any]:
        return params_to_json(self.cleaned_data["params"])
