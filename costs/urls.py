"""The costs app's pages (the managers' dashboard, budgets, reconciliation) and its API."""

from __future__ import annotations

from django.urls import URLPattern

page_patterns: list[URLPattern] = []

api_patterns: list[URLPattern] = []

project_api_patterns: list[URLPattern] = []
