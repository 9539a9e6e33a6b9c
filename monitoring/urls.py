"""The monitoring app's pages and API: production figures per served alias, drift reports,
alerts and their rules, retraining proposals, and the project's monitoring settings."""

from __future__ import annotations

from django.urls import URLPattern

# Pages under the site root (each names its project in the path).
page_patterns: list[URLPattern] = [
    # --- production pages (monitoring.production_views) ---
    # --- alerts, rules and settings (monitoring.alert_views) ---
    # --- retraining proposals (monitoring.retrain_views) ---
]

# API under /api/projects/<project_id>/.
project_api_patterns: list[URLPattern] = [
    # --- production figures (monitoring.production_api) ---
    # --- alerts and rules (monitoring.alert_api) ---
    # --- retraining proposals (monitoring.retrain_api) ---
]
