"""factory-boy factories for every app's models."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from jobs.models import JobRun, RunStatus, Trigger


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.django.Password("password")


class JobRunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = JobRun

    job = "tests.sample"
    trigger = Trigger.CLI
    status = RunStatus.SUCCEEDED
    started_at = factory.LazyFunction(timezone.now)
    finished_at = factory.LazyFunction(timezone.now)
