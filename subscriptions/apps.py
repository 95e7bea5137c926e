from django.apps import AppConfig


class SubscriptionsConfig(AppConfig):
    name = "subscriptions"

    def ready(self) -> None:
        from jobs.tenants import register_resolver, register_search
        from subscriptions import jobs  # noqa: F401 - registers this app's jobs

        register_resolver(resolve_organization)
        register_search(search_organizations)


def resolve_organization(key: str):
    """The platform's tenant resolver: an organization by its key."""
    from subscriptions.models import Organization

    try:
        return Organization.objects.get(key=key)
    except Organization.DoesNotExist:
        raise LookupError(f"no organization with key {key!r}") from None


def search_organizations(term: str, limit: int) -> list[tuple[str, str]]:
    """The admin's tenant picker: key prefix (indexed) or name prefix, bounded."""
    from django.db.models import Q

    from subscriptions.models import Organization

    found = Organization.objects.order_by("key")
    if term:
        found = found.filter(Q(key__startswith=term.lower()) | Q(name__istartswith=term))
    return [(key, f"{name} ({key})") for key, name in found.values_list("key", "name")[:limit]]
