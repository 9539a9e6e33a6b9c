"""The experiments page's create form: what a lead typed, read into the arguments of
``serving.services.experiment_create`` (the service the API calls, so both refuse with the same
messages), and each refusal put beside the input it names, with everything typed kept.

The form has a fixed number of answering arm rows and one shadow row; a row left blank (no name
and nothing chosen) is no arm. An arm's target is one select: ``version:<id>`` (a version of
the experiment's model) or ``base:<catalog key>`` (a base model as it is). The service names
an arm by its position among the arms sent (``arms[1].weight``), which is not its row when a
blank row came before it, so every arm remembers its row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from django.http import QueryDict

from ftportal.errors import ApplicationError
from ftportal.http import parse_id
from ftportal.models import Project
from registry.models import RegisteredModel
from registry.selectors import registered_models_of

from .models import MAX_ARM_WEIGHT
from .services import ArmSpec

# Enough for an A/B/C/D test; the API takes up to MAX_ARMS for anyone who needs more.
ANSWERING_ARM_ROWS = 4
DEFAULT_ALIAS = "production"
# The service's field names for an arm: arms[<position>].<part>.
_ARM_FIELD = re.compile(r"^arms\[(\d+)\]\.(\w+)$")
# Which input of an arm's row each of the service's arm fields is about.
_ROW_INPUT = {
    "name": "name",
    "weight": "weight",
    "model_version_id": "target",
    "base_model_key": "target",
}


@dataclass
class ArmRow:
    """One arm's row as typed; ``errors`` by input (name, target, weight)."""

    prefix: str  # the inputs' names start with it: arm-0-name, shadow-target, ...
    name: str = ""
    target: str = ""
    weight: str = "1"
    errors: dict[str, list[str]] = field(default_factory=dict)

    @property
    def blank(self) -> bool:
        return not self.name.strip() and not self.target.strip()

    def arm_spec(self, *, weight: int, shadow: bool) -> ArmSpec:
        kind, _, value = self.target.strip().partition(":")
        version_id = parse_id(value) if kind == "version" else None
        return ArmSpec(
            name=self.name,
            weight=weight,
            model_version_id=version_id,
            base_model_key=value if kind == "base" else "",
            shadow=shadow,
        )


@dataclass
class ExperimentForm:
    """The form as typed (strings, shown again as they were); ``errors`` by input name for
    the experiment's own inputs, ``error`` for a refusal that names no input."""

    name: str = ""
    registered_model_id: str = ""
    alias: str = DEFAULT_ALIAS
    success_event: str = ""
    shadow_share: str = ""
    arms: list[ArmRow] = field(
        default_factory=lambda: [ArmRow(prefix=f"arm-{row}") for row in range(ANSWERING_ARM_ROWS)]
    )
    shadow: ArmRow = field(default_factory=lambda: ArmRow(prefix="shadow", weight=""))
    errors: dict[str, list[str]] = field(default_factory=dict)
    error: str = ""

    @property
    def invalid(self) -> bool:
        rows = [*self.arms, self.shadow]
        return bool(self.errors or self.error or any(row.errors for row in rows))


@dataclass(frozen=True)
class ExperimentWanted:
    """The service's arguments, read from a form; ``rows[p]`` is the row of ``arms[p]``."""

    name: str
    registered_model: RegisteredModel
    alias: str
    success_event: str
    arms: list[ArmSpec]
    shadow_share: float
    rows: list[ArmRow]


def experiment_form_blank(project: Project) -> ExperimentForm:
    """The empty form; the model chosen already when the project has only one."""
    models = list(registered_models_of(project).values_list("pk", flat=True)[:2])
    return ExperimentForm(registered_model_id=str(models[0]) if len(models) == 1 else "")


def experiment_form_from(data: QueryDict) -> ExperimentForm:
    """The form as the lead sent it."""

    def row(prefix: str) -> ArmRow:
        return ArmRow(
            prefix=prefix,
            name=data.get(f"{prefix}-name", ""),
            target=data.get(f"{prefix}-target", ""),
            weight=data.get(f"{prefix}-weight", ""),
        )

    return ExperimentForm(
        name=data.get("name", ""),
        registered_model_id=data.get("registered_model_id", ""),
        alias=data.get("alias", ""),
        success_event=data.get("success_event", ""),
        shadow_share=data.get("shadow_share", ""),
        arms=[row(f"arm-{index}") for index in range(ANSWERING_ARM_ROWS)],
        shadow=row("shadow"),
    )


def _weight(raw: str) -> int | None:
    """An answering arm's weight (empty: 1, the API's default); None when not a whole number
    (the service refuses one out of range with the same words)."""
    text = raw.strip()
    if not text:
        return 1
    return int(text) if re.fullmatch(r"[+-]?\d{1,9}", text) else None


def experiment_wanted(project: Project, form: ExperimentForm) -> ExperimentWanted | None:
    """The service's arguments, or None when some input cannot even be read (a weight that
    is no whole number, a share that is no number, no model chosen): each such input gets
    its error in ``form``, all at once; the service checks the rest."""
    rows = [row for row in form.arms if not row.blank]
    arms: list[ArmSpec] = []
    for position, row in enumerate(rows):
        weight = _weight(row.weight)
        if weight is None:
            row.errors.setdefault("weight", []).append(
                f"arms[{position}].weight: a whole number from 1 to {MAX_ARM_WEIGHT}."
            )
            continue
        arms.append(row.arm_spec(weight=weight, shadow=False))
    if not form.shadow.blank:
        rows.append(form.shadow)
        arms.append(form.shadow.arm_spec(weight=0, shadow=True))
    shadow_share = 0.0
    if form.shadow_share.strip():
        try:
            shadow_share = float(form.shadow_share.strip())
        except ValueError:
            form.errors["shadow_share"] = ["shadow_share: a share from 0 to 1."]
    model_id = parse_id(form.registered_model_id.strip())
    registered_model = (
        registered_models_of(project).filter(pk=model_id).first() if model_id is not None else None
    )
    if registered_model is None:
        form.errors["registered_model_id"] = ["registered_model_id: not a model of this project."]
    if form.invalid or registered_model is None:
        return None
    return ExperimentWanted(
        name=form.name,
        registered_model=registered_model,
        alias=form.alias,
        success_event=form.success_event,
        arms=arms,
        shadow_share=shadow_share,
        rows=rows,
    )


def experiment_form_refused(
    form: ExperimentForm, wanted: ExperimentWanted, refused: ApplicationError
) -> None:
    """Put the service's refusal beside the input its field names (the page's top when it
    names none the form has)."""
    field_name = str(refused.extra.get("field", ""))
    arm = _ARM_FIELD.match(field_name)
    if arm is not None and int(arm.group(1)) < len(wanted.rows):
        row = wanted.rows[int(arm.group(1))]
        row.errors.setdefault(_ROW_INPUT.get(arm.group(2), "name"), []).append(refused.message)
    elif field_name in {
        "name",
        "registered_model_id",
        "alias",
        "success_event",
        "shadow_share",
        "arms",
    }:
        form.errors.setdefault(field_name, []).append(refused.message)
    else:
        form.error = refused.message
