from django.contrib.admin.apps import AdminConfig


class BackofficeAdminConfig(AdminConfig):
    """django.contrib.admin, with the staff login that knows two-factor tokens."""

    default_site = "config.admin_site.BackofficeAdminSite"
