"""A scheduled task that proves a cluster both schedules and executes work."""

from __future__ import annotations

import os
import socket

from django.utils import timezone
from django_q.conf import Conf

from jobs.models import ClusterHeartbeat


def beat() -> None:
    ClusterHeartbeat.objects.update_or_create(
        cluster=Conf.CLUSTER_NAME,
        defaults={
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "seen_at": timezone.now(),
        },
    )
