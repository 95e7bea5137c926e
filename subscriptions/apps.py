from django.apps import AppConfig


class SubscriptionsConfig(AppConfig):
    name = "subscriptions"

    def ready(self) -> None:
        from jobs.tenants import register_resolver
        from subscriptions import jobs  # noqa: F401 - registers this app's jobs

        register_resolver(resolve_organization)


def resolve_organization(key: str):
    """The platform's tenant resolver: an organization by its key."""
    from subscriptions.models import Organization

    try:
        return Organization.objects.get(key=key)
    except Organization.DoesNotExist:
        raise LookupError(f"no organization with key {key!r}") from None
