"""URLs of the Django ORM-guard test app (tests/subscribers/test_django_guard.py)."""

from __future__ import annotations

from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.urls import path


def count(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("select count(*) from orders")
        row = cursor.fetchone()
    return JsonResponse({"orders": row[0] if row else None})


def duplicate(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("insert into orders values (1)")  # already there: a constraint violation
    return JsonResponse({"inserted": True})


urlpatterns = [path("count", count), path("duplicate", duplicate)]
