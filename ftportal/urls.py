from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from ftportal.auth_views import PasswordChangeView
from ftportal.views import favicon, healthz

urlpatterns = [
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
    path("api/", include("ftportal.api_urls")),
    path("", include("ftportal.page_urls")),
]

# Under /api/ these answer in the API's one error shape (JSON); pages keep Django's own.
handler400 = "ftportal.api_errors.bad_request"
handler403 = "ftportal.api_errors.permission_denied"
handler404 = "ftportal.api_errors.page_not_found"
handler500 = "ftportal.api_errors.server_error"
