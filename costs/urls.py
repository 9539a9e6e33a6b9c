"""The costs app's pages (the managers' dashboard, budgets, reconciliation) and its API."""

from __future__ import annotations

from django.urls import URLPattern, path

from . import api, budget_api, budget_views, price_views, reconciliation_views, views

page_patterns: list[URLPattern] = [
    path("costs/", views.costs_dashboard, name="costs_dashboard"),
    path("costs/export.csv", views.costs_export, name="costs_export"),
    path("costs/prices/", price_views.prices, name="costs_prices"),
    path(
        "costs/reconciliation/",
        reconciliation_views.reconciliation_page,
        name="costs_reconciliation",
    ),
    path("projects/<int:project_id>/budget/", budget_views.budget_page, name="project_budget"),
    path(
        "projects/<int:project_id>/budget/remove/",
        budget_views.budget_page_remove,
        name="project_budget_remove",
    ),
    path(
        "projects/<int:project_id>/budget/alerts/<int:alert_id>/acknowledge/",
        budget_views.budget_alert_page_acknowledge,
        name="budget_alert_acknowledge",
    ),
]

api_patterns: list[URLPattern] = [
    path("costs/", api.CostDashboardApi.as_view(), name="costs_dashboard"),
]

project_api_patterns: list[URLPattern] = [
    path("budget/", budget_api.BudgetApi.as_view(), name="budget_detail"),
    path("budget/alerts/", budget_api.BudgetAlertListApi.as_view(), name="budget_alert_list"),
    path(
        "budget/alerts/<int:alert_id>/acknowledge/",
        budget_api.BudgetAlertAcknowledgeApi.as_view(),
        name="budget_alerts_acknowledge",
    ),
]
