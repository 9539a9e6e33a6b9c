from django.apps import AppConfig


class FtportalConfig(AppConfig):
    name = "ftportal"
    verbose_name = "ftportal"

    def ready(self) -> None:
        # Every Celery worker of the site reports which queues it consumes; the signals only
        # ever fire in a worker process.
        from .heartbeat import worker_presence_signals_connect

        worker_presence_signals_connect()
