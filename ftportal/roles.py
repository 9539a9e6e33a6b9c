"""Who may do what in a project: the one place that says it."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import models


class Role(models.TextChoices):
    REVIEWER = "reviewer", "Reviewer"
    ML_LEAD = "ml_lead", "ML lead"
    MANAGER = "manager", "Manager"
    ADMIN = "admin", "Admin"


class Action(models.TextChoices):
    VIEW = "view", "view the project"
    IMPORT_EXAMPLES = "import_examples", "import examples"
    REVIEW = "review", "review examples"
    # Approving, rejecting or tagging a whole filtered selection at once: one click can undo
    # many reviewers' work (a dry run selected 137 approved examples to reject), so it is the
    # ML lead's call; each reviewer decides one example at a time.
    BULK_REVIEW = "bulk_review", "approve, reject or tag many examples at once"
    ASSIGN = "assign", "assign examples to reviewers and edit guidelines"
    ADJUDICATE = "adjudicate", "decide disputed examples"
    READ_VOTES = "read_votes", "see every reviewer's vote"
    ANALYZE = "analyze", "run quality analysis"
    FREEZE = "freeze", "freeze a dataset version"
    SET_CONTRACT = "set_contract", "set a dataset's answer contract"
    TRAIN = "train", "launch or cancel training"
    EVALUATE = "evaluate", "run evaluations"
    PROMOTE = "promote", "promote or roll back model versions"
    # Promoting without the evaluation the promotion gate asks for, with a reason on record.
    OVERRIDE_PROMOTION_GATE = "override_promotion_gate", "promote without passing the gate"
    MANAGE_MEMBERS = "manage_members", "manage members"
    # The project's own settings: its name, description and the default system prompt put in
    # front of imported examples that bring none (issue 18); an admin's, like its members.
    EDIT_PROJECT = "edit_project", "edit the project's settings"
    # Application keys let programs call the project's production models through the gateway:
    # creating or revoking one is a lead's call (issue 15: "leads manage keys, routes and
    # experiments; managers read"). Every member may read the list, which shows no secret.
    MANAGE_APP_KEYS = "manage_app_keys", "create or revoke application keys"
    # Where an alias's traffic goes when its version fails (issue 15: "leads manage keys,
    # routes and experiments; managers read"): every member reads the routes.
    MANAGE_ROUTES = "manage_routes", "set, change or remove fallback routes"
    # The request log holds what end users typed: its own action, so tightening who reads
    # production traffic is one line here. Issue 15: "reviewers browse logs and send to review;
    # managers read" (every role today).
    READ_TRAFFIC = "read_traffic", "browse the gateway's request log"
    SEND_TRAFFIC_TO_REVIEW = "send_traffic_to_review", "send logged requests to review"
    # Experiments split an alias's live traffic between versions and conclude by promoting
    # one: a lead's call (issue 15 item 7); every member reads their results.
    MANAGE_EXPERIMENTS = "manage_experiments", "create, start, stop or conclude experiments"
    READ_EXPERIMENTS = "read_experiments", "read experiments and their results"
    # What the project spent, on the managers' dashboard (issue 16): managers, leads and
    # admins; reviewers label data and see no bills.
    READ_COSTS = "read_costs", "read the project's costs"
    # A project's monthly budget, its hard cap and its alerts (issue 16 item 5): a lead's call,
    # as launching what spends is; managers read it ("change nothing").
    SET_BUDGET = "set_budget", "set the monthly budget and acknowledge its alerts"
    # What production serves, its drift and its alerts (issue 17): every member reads them,
    # as they read the request log they come from.
    READ_MONITORING = "read_monitoring", "read production figures, drift reports and alerts"
    # Alert rules, where alerts are sent, acknowledging and resolving them, and deciding on a
    # proposed retrain (accepting one launches training): a lead's call.
    MANAGE_MONITORING = (
        "manage_monitoring",
        "edit alert rules, handle alerts and decide on proposed retrains",
    )


_ALL = frozenset(Role)
ALLOWED_ROLES: dict[Action, frozenset[Role]] = {
    Action.VIEW: _ALL,
    Action.IMPORT_EXAMPLES: frozenset({Role.REVIEWER, Role.ML_LEAD, Role.ADMIN}),
    Action.REVIEW: frozenset({Role.REVIEWER, Role.ML_LEAD, Role.ADMIN}),
    Action.BULK_REVIEW: frozenset({Role.ML_LEAD, Role.ADMIN}),
    Action.ASSIGN: frozenset({Role.ML_LEAD, Role.ADMIN}),
    Action.ADJUDICATE: frozenset({Role.ML_LEAD, Role.ADMIN}),
    # Reviewers vote blind, so they never see the others' votes; managers read, never vote.
    Action.READ_VOTES: frozenset({Role.ML_LEAD, Role.MANAGER, Role.ADMIN}),
    Action.ANALYZE: frozenset({Role.REVIEWER, Role.ML_LEAD, Role.ADMIN}),
    Action.FREEZE: frozenset({Role.ML_LEAD, Role.ADMIN}),
    Action.SET_CONTRACT: frozenset({Role.ML_LEAD, Role.ADMIN}),
    Action.TRAIN: frozenset({Role.ML_LEAD, Role.ADMIN}),
    Action.EVALUATE: frozenset({Role.ML_LEAD, Role.ADMIN}),
    Action.PROMOTE: frozenset({Role.ML_LEAD, Role.ADMIN}),
    Action.OVERRIDE_PROMOTION_GATE: frozenset({Role.ADMIN}),
    Action.MANAGE_MEMBERS: frozenset({Role.ADMIN}),
    Action.EDIT_PROJECT: frozenset({Role.ADMIN}),
    Action.MANAGE_APP_KEYS: frozenset({Role.ML_LEAD, Role.ADMIN}),
    Action.MANAGE_ROUTES: frozenset({Role.ML_LEAD, Role.ADMIN}),
    Action.READ_TRAFFIC: _ALL,
    Action.SEND_TRAFFIC_TO_REVIEW: frozenset({Role.REVIEWER, Role.ML_LEAD, Role.ADMIN}),
    Action.MANAGE_EXPERIMENTS: frozenset({Role.ML_LEAD, Role.ADMIN}),
    Action.READ_EXPERIMENTS: _ALL,
    Action.READ_COSTS: frozenset({Role.MANAGER, Role.ML_LEAD, Role.ADMIN}),
    Action.SET_BUDGET: frozenset({Role.ML_LEAD, Role.ADMIN}),
    Action.READ_MONITORING: _ALL,
    Action.MANAGE_MONITORING: frozenset({Role.ML_LEAD, Role.ADMIN}),
}


def role_allows(role: str | None, action: Action) -> bool:
    return role is not None and Role(role) in ALLOWED_ROLES[action]


@dataclass(frozen=True)
class RoleFlags:
    """What a member's role allows, one flag per :class:`Action` (same names), for pages to
    show only the controls a member may use; every request is checked again by
    ``ftportal.permissions.project_for``. Templates read them as ``can.review``."""

    view: bool
    import_examples: bool
    review: bool
    bulk_review: bool
    assign: bool
    adjudicate: bool
    read_votes: bool
    analyze: bool
    freeze: bool
    set_contract: bool
    train: bool
    evaluate: bool
    promote: bool
    override_promotion_gate: bool
    manage_members: bool
    edit_project: bool
    manage_app_keys: bool
    manage_routes: bool
    read_traffic: bool
    send_traffic_to_review: bool
    manage_experiments: bool
    read_experiments: bool
    read_costs: bool
    set_budget: bool
    read_monitoring: bool
    manage_monitoring: bool


def role_flags(role: str | None) -> RoleFlags:
    """Every flag for ``role`` (None, a non-member: none allowed), read from ALLOWED_ROLES."""
    return RoleFlags(**{action.value: role_allows(role, action) for action in Action})
