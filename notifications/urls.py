"""SES feedback: SNS posts bounce and complaint events here (notifications.views,
which verifies the SNS signature with django-ses and checks topic and message).

Set AWS_SNS_EVENT_TRUSTED_TOPIC_ARNS to the topic of the SES configuration set
and subscribe it to `<site>/ses/events/`; until then the endpoint is 404.
"""

from django.urls import path

from notifications.views import SESEventView

app_name = "notifications"

urlpatterns = [
    path("events/", SESEventView.as_view(), name="ses-events"),
]
