"""The token prices page (/costs/prices/): the price in force of each model the catalog offers
or someone set by hand, a search over the imported table, and a form for a manual price (a
negotiated rate, a model the table lacks) for ML leads and admins of any project.

Prices are the site's, not one project's: a provider bills a model at one rate whichever
project calls it. Every manual row keeps who set it and why, and never changes what the
ledger already holds."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from ftportal.errors import ApplicationError
from ftportal.http import AppRequest
from ftportal.models import Membership
from ftportal.roles import Role

from .prices import price_override_add, prices_listed
from .selectors import AnyUser, cost_projects

SEARCH_MAX_LENGTH = 100
# Who may set a price: those who launch what spends (a lead or an admin of some project).
PRICE_SETTERS = (Role.ML_LEAD, Role.ADMIN)


def may_set_prices(user: AnyUser) -> bool:
    if not user.is_authenticated:
        return False
    if getattr(user, "is_superuser", False):
        return True
    return Membership.objects.filter(user_id=user.pk, role__in=PRICE_SETTERS).exists()


@login_required
@require_http_methods(["GET", "POST"])
def prices(request: AppRequest) -> HttpResponse:
    if not cost_projects(request.user):
        raise PermissionDenied("Prices are read by projects' managers, ML leads and admins.")
    can_set = may_set_prices(request.user)
    error: ApplicationError | None = None
    if request.method == "POST":
        if not can_set:
            raise PermissionDenied("Only an ML lead or an admin of a project sets prices.")
        try:
            price = price_override_add(
                model=request.POST.get("model", ""),
                input_usd_per_million=request.POST.get("input_usd_per_million", ""),
                output_usd_per_million=request.POST.get("output_usd_per_million", ""),
                reason=request.POST.get("reason", ""),
                user=request.user,
            )
        except ApplicationError as refused:
            error = refused
        else:
            messages.success(request, f"{price.model}: your price is in force from now on.")
            return redirect("costs_prices")
    search = request.GET.get("q", "")[:SEARCH_MAX_LENGTH]
    context = {
        "prices": prices_listed(search=search),
        "search": search,
        "can_set": can_set,
        "error": error,
        "form": request.POST if error else {},
    }
    return render(request, "costs/prices.html", context, status=400 if error else 200)
