"""Row-level rules: which instances a caller may see. Applied in every query, never after the fact."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, false, or_, true

from services.db.models import InstanceRow


@dataclass(frozen=True, slots=True)
class Visibility:
    """Own instances always; every instance of `org_ids`; everything with `all_orgs`."""

    owner_sub: str | None = None
    owner_org: str | None = None
    org_ids: frozenset[str] = frozenset()
    all_orgs: bool = False

    @classmethod
    def everything(cls) -> Visibility:
        return cls(all_orgs=True)

    def clause(self) -> ColumnElement[bool]:
        if self.all_orgs:
            return true()
        parts: list[ColumnElement[bool]] = []
        if self.owner_sub is not None and self.owner_org is not None:
            parts.append(and_(InstanceRow.owner_sub == self.owner_sub, InstanceRow.org_id == self.owner_org))
        if self.org_ids:
            parts.append(InstanceRow.org_id.in_(sorted(self.org_ids)))
        return or_(*parts) if parts else false()

    def allows(self, *, org_id: str, owner_sub: str) -> bool:
        if self.all_orgs or org_id in self.org_ids:
            return True
        return owner_sub == self.owner_sub and org_id == self.owner_org
