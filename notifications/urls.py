"""SES feedback: SNS posts bounce and complaint events here (django-ses's view,
which verifies the SNS signature and sends the signals `apps.py` listens to).

Include it from config/urls.py, e.g. `path("ses/", include("notifications.urls"))`,
and subscribe the SNS topic of the SES configuration set to `<site>/ses/events/`.
"""

from django.urls import path
from django_ses.views import SESEventWebhookView

app_name = "notifications"

urlpatterns = [
    path("events/", SESEventWebhookView.as_view(), name="ses-events"),
]
