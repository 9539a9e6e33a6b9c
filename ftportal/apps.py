from django.apps import AppConfig


class FtportalConfig(AppConfig):
    name = "ftportal"
    verbose_name = "ftportal"
