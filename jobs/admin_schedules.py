"""Admin pages of staff's own schedules (jobs.custom_schedules): a registered
job, a cron in a time zone, an optional tenant, parameters checked by the
registry's types, a misfire policy; pause with a reason, resume."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from jobs.admin_views import RunPermissionAdminMixin
from jobs.cron import CronError, normalize_cron
from jobs.custom_schedules import first_next_run, pause, resume, slots_after, validate, zone
from jobs.models import JobAction
from jobs.param_forms import FIELD_PREFIX, ParamFormMixin, field_name
from jobs.params import ParamError, params_to_json
from jobs.registry import JobSpec, UnknownJob, all_jobs, get_job
from jobs.schedule_models import CustomSchedule
from jobs.tenants import UnknownTenant


def typed_params_job(job_name: str | None, *, json_given: bool) -> JobSpec | None:
    """The job whose typed parameter fields the schedule form shows (the one
    posted, asked for with `?job=`, or the schedule's own), unless the JSON box
    was what got posted. The form and the admin's field list both ask this."""
    if json_given:
        return None
    try:
        return get_job(job_name or "")
    except UnknownJob:
        return None


class CustomScheduleForm(ParamFormMixin, forms.ModelForm):
    """The job's parameters are the typed fields of "Run now…" (jobs.param_forms)
    once the job is known (`?job=` on the add page, or the schedule's own job);
    before that, a JSON object checked by the same coercion."""

    job = forms.ChoiceField()
    cron = forms.CharField(
        max_length=100,
        help_text="5 fields (minute hour day month weekday) or 6 with seconds first.",
    )
    params_text = forms.CharField(
        label="Parameters",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text='A JSON object, e.g. {"days": 14}; checked against the job\'s parameters.',
    )

    class Meta:
        model = CustomSchedule
        fields = [
            "name",
            "job",
            "cron",
            "time_zone",
            "tenant",
            "misfire",
            "misfire_max",
            "paused",
            "pause_reason",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["job"].choices = [(s.name, s.name) for s in all_jobs()]
        chosen = self.data.get("job") if self.is_bound else self.initial.get("job")
        spec = typed_params_job(
            chosen or self.instance.job, json_given=self.is_bound and "params_text" in self.data
        )
        if spec is not None:
            del self.fields["params_text"]
            self.add_param_fields(spec.params)
            if not self.is_bound and self.instance.pk and self.instance.job == spec.name:
                for param in spec.params:
                    if param.name in (self.instance.params or {}):
                        self.initial[field_name(param)] = self.instance.params[param.name]
        elif self.instance.pk:
            self.initial["params_text"] = json.dumps(self.instance.params or {})

    def clean_cron(self) -> str:
        try:
            return normalize_cron(self.cleaned_data["cron"])
        except CronError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        params_field = "params_text" if "params_text" in self.fields else None
        if params_field is None:
            params = params_to_json(self.clean_params())
        else:
            text = (data.get("params_text") or "").strip() or "{}"
            try:
                params = json.loads(text)
            except json.JSONDecodeError as exc:
                self.add_error("params_text", f"not JSON: {exc.msg} (line {exc.lineno})")
                return data
        if "job" not in data or "cron" not in data:
            return data
        try:
            _, data["params"] = validate(
                job=data["job"],
                cron_stored=data["cron"],
                time_zone=data.get("time_zone") or "",
                tenant=data.get("tenant") or "",
                params=params,
            )
        except ParamError as exc:
            self.add_error(params_field, str(exc))
        except UnknownTenant as exc:
            self.add_error("tenant", str(exc))
        except UnknownJob as exc:
            self.add_error("job", str(exc))
        except ValueError as exc:
            self.add_error("time_zone", str(exc))
        if data.get("paused") and not (data.get("pause_reason") or "").strip():
            self.add_error("pause_reason", "A reason is required to pause a schedule.")
        return data


@admin.register(CustomSchedule)
class CustomScheduleAdmin(RunPermissionAdminMixin, admin.ModelAdmin):
    form = CustomScheduleForm
    list_display = ["name", "job", "tenant", "cron", "time_zone", "next_runs", "state"]
    list_filter = ["paused", "job"]
    search_fields = ["name", "job", "tenant"]
    readonly_fields = ["next_runs", "last_slot", "paused_by", "paused_at"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        """The fields the form will have: the job's typed parameters in place of
        the JSON box once the job is known (as CustomScheduleForm decides)."""
        fields = list(super().get_fields(request, obj))
        chosen = request.POST.get("job") if request.method == "POST" else request.GET.get("job")
        spec = typed_params_job(
            chosen or (obj.job if obj else ""), json_given="params_text" in request.POST
        )
        if spec is None:
            return fields
        at = fields.index("params_text")
        fields[at : at + 1] = [field_name(p) for p in spec.params]
        return fields

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any):
        # The parameter fields are the form's own (added per job), not the model's.
        if kwargs.get("fields"):
            kwargs["fields"] = [f for f in kwargs["fields"] if not f.startswith(FIELD_PREFIX)]
        return super().get_form(request, obj, change, **kwargs)

    @admin.display(description="next 5 runs (schedule's zone / UTC)")
    def next_runs(self, obj: CustomSchedule) -> str:
        if not obj.pk or obj.paused or not obj.next_run:
            return "paused" if obj.paused else "-"
        slots = [obj.next_run, *slots_after(obj.cron, obj.time_zone, obj.next_run, 4)]
        tz = zone(obj.time_zone)
        return "; ".join(f"{s.astimezone(tz):%Y-%m-%d %H:%M %Z} / {s:%H:%M} UTC" for s in slots)

    @admin.display(description="state")
    def state(self, obj: CustomSchedule) -> str:
        return f"paused by {obj.paused_by}: {obj.pause_reason}" if obj.paused else "active"

    def save_model(
        self, request: HttpRequest, obj: CustomSchedule, form: Any, change: bool
    ) -> None:
        actor = request.user.get_username()
        obj.params = form.cleaned_data.get("params", {})
        was_paused = change and CustomSchedule.objects.filter(pk=obj.pk, paused=True).exists()
        now_paused, reason = obj.paused, obj.pause_reason
        if not change:
            obj.created_by = actor
        # Pause and resume go through their services below; the row keeps its state.
        stored = CustomSchedule.objects.filter(pk=obj.pk).first() if change else None
        obj.paused, obj.pause_reason = (
            (stored.paused, stored.pause_reason) if stored else (False, "")
        )
        if not change or "cron" in form.changed_data or "time_zone" in form.changed_data:
            obj.next_run = first_next_run(obj)
        super().save_model(request, obj, form, change)
        if now_paused and not was_paused:
            pause(obj, actor=actor, reason=reason)
        elif was_paused and not now_paused:
            resume(obj, actor=actor)
        JobAction.objects.create(
            actor=actor,
            action="edit_schedule" if change else "add_schedule",
            job=obj.job,
            detail={
                "schedule": obj.name,
                "cron": obj.cron,
                "time_zone": obj.time_zone,
                "tenant": obj.tenant,
                "params": obj.params,
            },
        )
