from django.apps import AppConfig


class SubscriptionsConfig(AppConfig):
    name = "subscriptions"

    def ready(self) -> None:
        # Lazy: apps.py is imported before the models; ready() runs once they are.
        from jobs.tenants import register_resolver, register_search
        from subscriptions import jobs  # noqa: F401 - registers this app's jobs
        from subscriptions.selectors import organization_by_key, search_organizations

        register_resolver(organization_by_key)
        register_search(search_organizations)
