from django.http import JsonResponse


def health_view(request):  # placeholder, replaced by the health work
    return JsonResponse({"status": "ok"})
