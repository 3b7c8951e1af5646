"""URLs of the Django test app (tests/subscribers/test_web_fake.py)."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.urls import path

from healthbus.subscribers.django import requires


@requires("db")
def orders(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"ok": True})


def other_error(request: HttpRequest) -> JsonResponse:
    raise ValueError("not a dependency outage")


urlpatterns = [path("orders", orders), path("other-error", other_error)]
