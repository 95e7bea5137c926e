"""Forms behind the jobs admin: a schedule's cron, the reason to pause, API keys."""

from __future__ import annotations

from django import forms

from jobs.api_keys import clean_scopes
from jobs.cron import CronError, normalize_cron
from jobs.models import ApiKey, ScheduleState


class ScheduleStateForm(forms.ModelForm):
    """Edits the cron of the django-q2 Schedule behind a job's ScheduleState.

    The cron lives on the Schedule, so it is a form field here, validated by
    `normalize_cron` and stored in the form django-q2's croniter reads.
    """

    cron = forms.CharField(
        max_length=100,
        help_text=(
            "5 fields (minute hour day month weekday) or 6 with seconds first "
            "(second minute hour day month weekday), e.g. 0 0 */6 * * *"
        ),
    )

    class Meta:
        model = ScheduleState
        fields: list[str] = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial.setdefault("cron", self.instance.schedule.cron)

    def clean_cron(self) -> str:
        try:
            return normalize_cron(self.cleaned_data["cron"])
        except CronError as exc:
            raise forms.ValidationError(str(exc)) from None


class PauseForm(forms.Form):
    """Pausing stops a schedule silently; the reason tells the next person why."""

    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Why the schedule is paused; shown beside it until it is resumed.",
    )


class ApiKeyForm(forms.ModelForm):
    """Scopes one per line; validated against the registered scope resources."""

    scopes_text = forms.CharField(
        label="Scopes",
        widget=forms.Textarea(attrs={"rows": 4, "cols": 60}),
        help_text=(
            "One per line: jobs:run:&lt;glob&gt; (start and read runs of matching jobs, "
            "e.g. jobs:run:billing.*), jobs:read:&lt;glob&gt; (read only), jobs:run, "
            "jobs:read (every job), * (everything)."
        ),
    )

    class Meta:
        model = ApiKey
        fields = ("name", "owner", "expires_at", "rate_limit_per_minute")

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["scopes_text"] = "\n".join(self.instance.scopes or [])

    def clean_scopes_text(self) -> list[str]:
        lines = [line.strip() for line in self.cleaned_data["scopes_text"].splitlines()]
        try:
            return clean_scopes([line for line in lines if line])
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None
