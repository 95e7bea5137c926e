"""Users, job runs and API keys (jobs)."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from jobs.api_keys import create_api_key
from jobs.models import ApiKey, JobRun, RunStatus, Trigger


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


class ApiKeyFactory(factory.django.DjangoModelFactory):
    """Made through the service, like the admin does; `.secret` is the key."""

    class Meta:
        model = ApiKey

    name = factory.Sequence(lambda n: f"client-{n}")
    owner = "platform team"
    scopes = factory.LazyFunction(lambda: ["jobs:run"])
    actor = "tests"

    @classmethod
    def _create(cls, model_class, **kwargs):
        new = create_api_key(**kwargs)
        new.api_key.secret = new.secret
        return new.api_key
