"""The role flags pages show controls by: one flag per action, each what ALLOWED_ROLES says."""

from __future__ import annotations

from dataclasses import asdict, fields

import pytest

from ftportal.roles import Action, Role, RoleFlags, role_allows, role_flags


def test_there_is_one_flag_per_action_and_nothing_else() -> None:
    assert {field.name for field in fields(RoleFlags)} == set(Action.values)


@pytest.mark.parametrize("role", [*Role.values, None])
def test_each_flag_is_what_the_table_allows_the_role(role: str | None) -> None:
    flags = asdict(role_flags(role))

    assert flags == {action.value: role_allows(role, action) for action in Action}


def test_a_reviewer_may_review_but_not_train_and_a_non_member_may_do_nothing() -> None:
    reviewer = role_flags(Role.REVIEWER)

    assert reviewer.review and reviewer.view
    assert not reviewer.train and not reviewer.bulk_review
    assert not any(asdict(role_flags(None)).values())
