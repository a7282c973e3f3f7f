"""Offset pagination: ``?limit=&offset=`` in, ``{"items", "total", "limit", "offset"}`` out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel

T = TypeVar("T")

MAX_LIMIT = 500


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class PageParams(BaseModel):
    limit: int
    offset: int

    def page(self, items: Sequence[T], total: int | None = None) -> Page[T]:
        """Slice a full list; pass ``total`` when ``items`` is already the requested slice."""
        if total is None:
            total = len(items)
            items = items[self.offset : self.offset + self.limit]
        return Page[T](items=list(items), total=total, limit=self.limit, offset=self.offset)


def _page_params(
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page")] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000, description="Items to skip")] = 0,
) -> PageParams:
    return PageParams(limit=limit, offset=offset)


Paging = Annotated[PageParams, Depends(_page_params)]
