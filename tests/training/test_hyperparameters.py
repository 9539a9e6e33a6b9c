import pytest

from ftportal.errors import ApplicationError
from providers.base import TrainingConfig
from training.hyperparameters import training_config_from


def test_missing_hyperparameters_take_the_guides_defaults():
    assert training_config_from({}) == TrainingConfig()
    assert TrainingConfig().epochs == 3


def test_numbers_given_as_text_are_converted_to_the_fields_type():
    config = training_config_from({"epochs": "4", "learning_rate": "0.001", "max_steps": 7})
    assert (config.epochs, config.learning_rate, config.max_steps) == (4, 0.001, 7)
    assert isinstance(config.max_steps, int)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"epochs": 0}, "hyperparameters.epochs"),
        ({"epochs": 3.7}, "hyperparameters.epochs"),
        ({"epochs": True}, "hyperparameters.epochs"),
        ({"learning_rate": "fast"}, "hyperparameters.learning_rate"),
        ({"lora_dropout": 0.95}, "hyperparameters.lora_dropout"),
    ],
)
def test_a_bad_value_is_refused_naming_its_field(raw, field):
    with pytest.raises(ApplicationError) as error:
        training_config_from(raw)
    assert error.value.extra["field"] == field
    assert field in error.value.message


def test_an_unknown_hyperparameter_is_refused():
    with pytest.raises(ApplicationError, match="warmup"):
        training_config_from({"warmup": 10})
