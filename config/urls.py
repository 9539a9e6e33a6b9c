"""The root URL conf: the site's own routes (health, sign-in, admin, the API's schema and docs),
then each app's pages at / and its API at /api/ (namespace "api"), from the app's urls.py:
``page_patterns``, ``api_patterns`` (under /api/) and ``project_api_patterns`` (under
/api/projects/<project_id>/); and serving's OpenAI-compatible gateway at /v1/."""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.urls import URLPattern, URLResolver, include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from catalog import urls as catalog_urls
from costs import urls as costs_urls
from datasets import urls as datasets_urls
from evaluation import urls as evaluation_urls
from ftportal import urls as ftportal_urls
from ftportal.auth_views import PasswordChangeView
from ftportal.views import favicon, healthz
from monitoring import urls as monitoring_urls
from registry import urls as registry_urls
from serving import urls as serving_urls
from training import urls as training_urls

from . import views

page_patterns: list[URLPattern] = [
    *ftportal_urls.page_patterns,
    path("projects/<int:project_id>/", views.project_detail, name="project_detail"),
    *datasets_urls.page_patterns,
    *training_urls.page_patterns,
    *registry_urls.page_patterns,
    *evaluation_urls.page_patterns,
    *serving_urls.page_patterns,
    *costs_urls.page_patterns,
    *monitoring_urls.page_patterns,
]

project_api_patterns: list[URLPattern] = [
    *ftportal_urls.project_api_patterns,
    *catalog_urls.project_api_patterns,
    *datasets_urls.project_api_patterns,
    *training_urls.project_api_patterns,
    *registry_urls.project_api_patterns,
    *evaluation_urls.project_api_patterns,
    *serving_urls.project_api_patterns,
    *costs_urls.project_api_patterns,
    *monitoring_urls.project_api_patterns,
]

api_patterns: list[URLPattern | URLResolver] = [
    *ftportal_urls.api_patterns,
    *costs_urls.api_patterns,
    path("projects/<int:project_id>/", include(project_api_patterns)),
]

urlpatterns: list[URLPattern | URLResolver] = [
    path("healthz", healthz, name="healthz"),
    path("favicon.ico", favicon, name="favicon"),
    path("admin/", admin.site.urls),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("password/", PasswordChangeView.as_view(), name="password_change"),
    path(
        "password/done/", auth_views.PasswordChangeDoneView.as_view(), name="password_change_done"
    ),
    path("api/schema/", SpectacularAPIView.as_view(), name="api_schema"),
    # For signed-in users only (SPECTACULAR_SETTINGS["SERVE_PERMISSIONS"] for the schema); the
    # docs page sends a visitor to the login page rather than answering a bare 403. The split
    # view serves Swagger UI's start-up script as a file: no inline script for the CSP.
    path(
        "api/docs/",
        login_required(
            SpectacularSwaggerSplitView.as_view(
                url_name="api_schema", template_name="ftportal/api_docs.html"
            )
        ),
        name="api_docs",
    ),
    # Namespaced ("api:...") so that the API's names never clash with the pages' names.
    path("api/", include((api_patterns, "api"))),
    # The OpenAI-compatible gateway: application keys only (serving.gateway).
    path("v1/", include(serving_urls.gateway_patterns)),
    path("", include(page_patterns)),
]

# Under /api/ these answer in the API's one error shape (JSON); pages keep Django's own.
handler400 = "ftportal.api_errors.bad_request"
handler403 = "ftportal.api_errors.permission_denied"
handler404 = "ftportal.api_errors.page_not_found"
handler500 = "ftportal.api_errors.server_error"
