"""Request guards that must run before anything else reads the request."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse


class RejectMalformedContentLength:
    """Answer 400 to a Content-Length that is not a non-negative integer.

    django-prometheus's middleware does `int(Content-Length)` and would turn
    such a request into a 500; a server in front usually refuses it first,
    `runserver` does not.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        length = request.META.get("CONTENT_LENGTH", "")
        if length and not (length.isascii() and length.isdigit()):
            return JsonResponse(
                {"error": "Content-Length header must be a non-negative integer"}, status=400
            )
        return self.get_response(request)
