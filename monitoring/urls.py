"""The monitoring app's pages and API: production figures per served alias, drift reports,
alerts and their rules, retraining proposals, and the project's monitoring settings."""

from __future__ import annotations

from django.urls import URLPattern, path

from . import (
    alert_api,
    alert_views,
    production_api,
    production_views,
    retrain_api,
    retrain_views,
)

# Pages under the site root (each names its project in the path).
page_patterns: list[URLPattern] = [
    # --- production pages (monitoring.production_views) ---
    path(
        "projects/<int:project_id>/production/",
        production_views.production_overview,
        name="production_overview",
    ),
    # An alias's name may hold any character, "/" included: the path converter takes it all.
    path(
        "projects/<int:project_id>/production/<int:model_id>/<path:alias>/",
        production_views.production_alias,
        name="production_alias",
    ),
    # --- alerts, rules and settings (monitoring.alert_views) ---
    path("projects/<int:project_id>/alerts/", alert_views.alert_list, name="monitoring_alerts"),
    path(
        "projects/<int:project_id>/alerts/<int:alert_id>/",
        alert_views.alert_detail,
        name="monitoring_alert",
    ),
    path(
        "projects/<int:project_id>/alerts/<int:alert_id>/acknowledge/",
        alert_views.alert_page_acknowledge,
        name="monitoring_alert_acknowledge",
    ),
    path(
        "projects/<int:project_id>/alerts/<int:alert_id>/resolve/",
        alert_views.alert_page_resolve,
        name="monitoring_alert_resolve",
    ),
    path("projects/<int:project_id>/alert-rules/", alert_views.rule_list, name="monitoring_rules"),
    path(
        "projects/<int:project_id>/alert-rules/<int:rule_id>/",
        alert_views.rule_edit,
        name="monitoring_rule",
    ),
    path(
        "projects/<int:project_id>/alert-rules/<int:rule_id>/delete/",
        alert_views.rule_page_delete,
        name="monitoring_rule_delete",
    ),
    path(
        "projects/<int:project_id>/monitoring/settings/",
        alert_views.monitoring_settings_page,
        name="monitoring_settings",
    ),
    # --- retraining proposals (monitoring.retrain_views) ---
    path("projects/<int:project_id>/retraining/", retrain_views.retrain_list, name="retrain_list"),
    path(
        "projects/<int:project_id>/retraining/<int:proposal_id>/",
        retrain_views.retrain_detail,
        name="retrain_proposal",
    ),
    path(
        "projects/<int:project_id>/retraining/<int:proposal_id>/accept/",
        retrain_views.retrain_page_accept,
        name="retrain_proposal_accept",
    ),
    path(
        "projects/<int:project_id>/retraining/<int:proposal_id>/dismiss/",
        retrain_views.retrain_page_dismiss,
        name="retrain_proposal_dismiss",
    ),
]

# API under /api/projects/<project_id>/.
project_api_patterns: list[URLPattern] = [
    # --- production figures (monitoring.production_api) ---
    path(
        "production/<int:model_id>/<path:alias>/",
        production_api.AliasProductionApi.as_view(),
        name="production_alias_figures",
    ),
    # --- alerts and rules (monitoring.alert_api) ---
    path("alerts/", alert_api.AlertListApi.as_view(), name="alerts_list"),
    path("alerts/<int:alert_id>/", alert_api.AlertDetailApi.as_view(), name="alerts_detail"),
    path(
        "alerts/<int:alert_id>/acknowledge/",
        alert_api.AlertAcknowledgeApi.as_view(),
        name="alerts_acknowledge",
    ),
    path(
        "alerts/<int:alert_id>/resolve/",
        alert_api.AlertResolveApi.as_view(),
        name="alerts_resolve",
    ),
    path("alert-rules/", alert_api.RuleListApi.as_view(), name="alert_rules_list"),
    path(
        "alert-rules/<int:rule_id>/", alert_api.RuleDetailApi.as_view(), name="alert_rules_detail"
    ),
    path(
        "monitoring/settings/",
        alert_api.MonitoringSettingsApi.as_view(),
        name="monitoring_settings_api",
    ),
    # --- retraining proposals (monitoring.retrain_api) ---
    path("retraining/", retrain_api.ProposalListApi.as_view(), name="retrain_proposals_list"),
    path(
        "retraining/<int:proposal_id>/",
        retrain_api.ProposalDetailApi.as_view(),
        name="retrain_proposals_detail",
    ),
    path(
        "retraining/<int:proposal_id>/accept/",
        retrain_api.ProposalAcceptApi.as_view(),
        name="retrain_proposals_accept",
    ),
    path(
        "retraining/<int:proposal_id>/dismiss/",
        retrain_api.ProposalDismissApi.as_view(),
        name="retrain_proposals_dismiss",
    ),
]
