"""The nav bar: each view module that wants an entry declares ``NAV = NavEntry(...)``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NavEntry:
    """One link of the nav bar.

    ``order`` places it (the issue's view numbers times ten leave room in between);
    ``platform_admin`` shows it only to platform-wide admin keys.
    """

    label: str
    path: str
    order: int
    platform_admin: bool = False

    def active(self, path: str) -> bool:
        """Is ``path`` this entry's page or under it?"""
        if self.path == "/":
            return path == "/"
        return path == self.path or path.startswith(self.path + "/")
