"""Patterns and models shared by several resources: request fields, route parameters and the
version reference of runs, traces and reports."""

from __future__ import annotations

from pydantic import BaseModel

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
"""A project's name: lower-case letters, digits, . _ - (64 at most)."""
NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL characters


class VersionRef(BaseModel):
    id: str
    label: str | None
