"""The nav bar: each view module that wants an entry declares ``NAV = NavEntry(...)``."""

from __future__ import annotations

from dataclasses import dataclass

from fxray.api.auth import Principal, Role


@dataclass(frozen=True, slots=True)
class NavEntry:
    """One link of the nav bar.

    ``order`` places it (the issue's view numbers times ten leave room in between);
    ``role`` shows it only to keys with at least that role in their own project (platform-wide
    admins see every entry), the role the page itself asks for.
    """

    label: str
    path: str
    order: int
    role: Role | None = None

    def active(self, path: str) -> bool:
        """Is ``path`` this entry's page or under it?"""
        if self.path == "/":
            return path == "/"
        return path == self.path or path.startswith(self.path + "/")

    def visible_to(self, principal: Principal) -> bool:
        """Does ``principal`` get this entry?"""
        return self.role is None or principal.allows(self.role, principal.project)
