"""A dataset with planted problems, stored through the models."""

from __future__ import annotations

from django.contrib.auth.models import User

from datasets.models import Dataset, Example, ExampleStatus
from ftportal.models import Project

from .conftest import convo

CLEAN = [
    ("My printer is jammed again and the tray light blinks", "hardware"),
    ("I cannot log in to the VPN since this morning", "network"),
    ("Please reset my password for the billing portal", "account"),
    ("The second monitor flickers when I plug in the dock", "hardware"),
    ("Wi-Fi drops every hour in the east meeting room", "network"),
]


def planted_dataset(project: Project, name: str = "planted") -> tuple[Dataset, dict[str, Example]]:
    """Clean examples plus: an exact duplicate pair (one approved), a rejected copy, an e-mail,
    an empty answer."""
    dataset = Dataset.objects.create(project=project, name=name)
    made: dict[str, Example] = {}
    for index, (question, answer) in enumerate(CLEAN):
        made[f"clean{index}"] = Example.objects.create(
            dataset=dataset, messages=convo(question, answer)
        )
    duplicate = convo("The projector in room 4 shows no picture", "hardware")
    made["dup_pending"] = Example.objects.create(dataset=dataset, messages=duplicate)
    made["dup_approved"] = Example.objects.create(
        dataset=dataset, messages=duplicate, status=ExampleStatus.APPROVED
    )
    made["dup_rejected"] = Example.objects.create(
        dataset=dataset, messages=duplicate, status=ExampleStatus.REJECTED
    )
    made["email"] = Example.objects.create(
        dataset=dataset, messages=convo("Reach me at sam@example.com about the laptop", "hardware")
    )
    made["empty"] = Example.objects.create(
        dataset=dataset, messages=convo("Keyboard missing keys", "   ")
    )
    return dataset, made


def user(name: str = "analyst") -> User:
    return User.objects.create_user(username=name, password="pw")
