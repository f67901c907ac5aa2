"""The orders a list of instances can be read in; each ends with the id, so every order is total."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class OrderField(enum.Enum):
    NAME = "NAME"
    CREATED_AT = "CREATED_AT"


class OrderDirection(enum.Enum):
    ASC = "ASC"
    DESC = "DESC"


@dataclass(frozen=True, slots=True)
class Order:
    field: OrderField = OrderField.CREATED_AT
    direction: OrderDirection = OrderDirection.DESC

    def __str__(self) -> str:
        return f"{self.field.value} {self.direction.value}"


NEWEST_FIRST = Order()
