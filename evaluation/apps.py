from django.apps import AppConfig


class EvaluationConfig(AppConfig):
    name = "evaluation"

    def ready(self) -> None:
        # The registry (a lower layer) asks evaluation for the promotion gate's evidence and
        # versions' scores through this hook; see registry.gate.
        from registry.gate import register_evaluation_reader

        from .promotion import EvaluationRecords

        register_evaluation_reader(EvaluationRecords())
