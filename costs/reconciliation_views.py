"""The reconciliation page (/costs/reconciliation/): each endpoint's days as its provider billed
them and as the ledger holds them, flagged days first. Read-only; the daily task and
``manage.py costs_reconcile`` write it (``costs.reconciliation``)."""

from __future__ import annotations

import datetime as dt

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import render
from django.utils import timezone

from ftportal.errors import PermissionDeniedError
from ftportal.http import AppRequest

from .reconciliation import reconciliation_days, reconciliation_readable, reconciling_endpoints

# How far back the page lists days.
SHOWN_DAYS = 90


@login_required
def reconciliation_page(request: AppRequest) -> HttpResponse:
    if not reconciliation_readable(request.user):
        raise PermissionDeniedError(
            "Reconciliation is for staff, and for managers and admins of a project."
        )
    since = timezone.now().astimezone(dt.UTC).date() - dt.timedelta(days=SHOWN_DAYS)
    context = {
        "days": reconciliation_days(since=since),
        "endpoints": list(reconciling_endpoints().values_list("name", flat=True)),
        "shown_days": SHOWN_DAYS,
        "is_admin": request.user.is_staff,
    }
    return render(request, "costs/reconciliation.html", context)
