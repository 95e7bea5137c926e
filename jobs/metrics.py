from django.http import HttpResponse


def metrics_view(request):  # placeholder, replaced by the metrics work
    return HttpResponse("")
