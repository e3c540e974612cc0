"""The page pipeline: pages listed ahead of the store, their partial embedded lists
(invoice lines, subscription items) completed side by side."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from integrations import stripe_mirror
from integrations.stripe_client import (
    Page,
    StripeReader,
)
from integrations.stripe_sync.state import Resource, SyncInterrupted


def complete_subscription_items(client: StripeReader, subscription: dict[str, Any]
                                 ) -> dict[str, Any]:
    """A subscription whose embedded items list is partial gets all its items."""
    items = subscription.get("items")
    if not isinstance(items, Mapping) or not items.get("has_more"):
        return subscription
    collected: list[dict[str, Any]] = []
    for page in client.iter_pages("subscription_items",
                                  {"subscription": subscription["id"],
                                   "expand": ["data.discounts"]}):
        collected.extend(page.data)
    completed = dict(subscription)
    completed["items"] = {**items, "data": collected, "has_more": False}
    return completed


def missing_invoice_lines(client: StripeReader, invoice: Mapping[str, Any]
                           ) -> list[dict[str, Any]] | None:
    """The lines missing from a partial embedded list (None when the list is complete)."""
    lines = invoice.get("lines")
    if not isinstance(lines, Mapping) or not lines.get("has_more"):
        return None
    return paged_invoice_lines(client, invoice)[0]


def paged_invoice_lines(client: StripeReader, invoice: Mapping[str, Any]
                         ) -> tuple[list[dict[str, Any]], int]:
    """The lines after the embedded ones, from ``/v1/invoices/{id}/lines``, and the number
    of pages that took."""
    lines = invoice.get("lines")
    embedded = [line for line in (lines.get("data") or [] if isinstance(lines, Mapping) else [])
                if isinstance(line, Mapping)]
    after = str(embedded[-1]["id"]) if embedded and "id" in embedded[-1] else None
    extra: list[dict[str, Any]] = []
    pages = 0
    for page in client.invoice_lines_pages(str(invoice["id"]), starting_after=after):
        extra.extend(page.data)
        pages += 1
    return extra, pages


def store_extra_lines(session: Session, invoice_id: str, lines: list[dict[str, Any]],
                       state_at: int) -> set[str]:
    """Store paged lines of a stored invoice and mark its line list complete."""
    for line in lines:
        line.setdefault("invoice", invoice_id)
    result = stripe_mirror.store_objects(session, "invoice_line", lines, state_at=state_at)
    stripe_mirror.mark_lines_complete(session, invoice_id)
    return result.customer_ids


# How many listed pages may wait, fetched, for the store (besides the one being stored and
# the one being requested), and how many requests complete partial embedded lists at once.
PREFETCH_PAGES = 2


COMPLETION_THREADS = 4


@dataclass
class _FetchedPage:
    """A listed page and the requests completing its partial embedded lists (running)."""

    page: Page
    objects: Future[list[dict[str, Any]]] | None = None
    lines: dict[str, Future[tuple[list[dict[str, Any]], int]]] = field(default_factory=dict)

    def result(self) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]], int]:
        """(objects, invoice id -> missing lines, line pages fetched); waits for them."""
        objects = self.objects.result() if self.objects is not None else self.page.data
        extra: dict[str, list[dict[str, Any]]] = {}
        line_pages = 0
        for invoice_id, future in self.lines.items():
            extra[invoice_id], pages = future.result()
            line_pages += pages
        return objects, extra, line_pages


_END = object()


class PagePipeline:
    """Lists one resource in a background thread, ahead of the consumer that stores it.

    The next page is requested as soon as the previous one arrives (its ``starting_after``
    is known then), while the consumer completes and stores earlier pages; each page's
    partial embedded lists (invoice lines, subscription items) start being fetched as soon
    as it arrives. At most ``PREFETCH_PAGES`` fetched pages wait. Pages come out in list
    order, and the consumer stores them one at a time with their cursor, so a crash or a
    kill resumes from the last stored page: a prefetched page that was not stored is just
    listed again (from the stored cursor), never skipped. Closing the pipeline stops the
    lister and waits for the requests in flight, so none outlives the backfill.
    """

    def __init__(self, reader: StripeReader, resource: Resource, cursor: str | None,
                 stop: threading.Event, *, params: Mapping[str, Any] | None = None,
                 label: str | None = None) -> None:
        self._reader = reader
        self._resource = resource
        self._params = resource.params if params is None else params
        self._label = label or resource.name
        self._cursor = cursor
        self._stop = stop
        self._closed = threading.Event()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=PREFETCH_PAGES)
        self._pool: ThreadPoolExecutor | None = None
        if resource.name in ("invoices", "subscriptions"):
            self._pool = ThreadPoolExecutor(max_workers=COMPLETION_THREADS,
                                            thread_name_prefix=f"nrr-{self._label}-complete")
        self._thread = threading.Thread(target=self._list, daemon=True,
                                        name=f"nrr-list-{self._label}")

    def __enter__(self) -> PagePipeline:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed.set()
        self._thread.join()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __iter__(self) -> Iterator[_FetchedPage]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _put(self, item: Any) -> bool:
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _list(self) -> None:
        pages = self._reader.iter_pages(self._resource.name, self._params,
                                        starting_after=self._cursor)
        try:
            for page in pages:
                if not self._put(self._start_completion(page)):
                    return
                if self._stop.is_set():
                    # Not the end of the list: the consumer must not mark the resource done.
                    self._put(SyncInterrupted(
                        f"{self._label}: stopped because another resource failed"))
                    return
            self._put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(exc)
        finally:
            close = getattr(pages, "close", None)
            if close is not None:
                close()

    def _start_completion(self, page: Page) -> _FetchedPage:
        fetched = _FetchedPage(page)
        if self._pool is None:
            return fetched
        reader = self._reader
        if self._resource.name == "subscriptions":
            if any(isinstance(s.get("items"), Mapping) and s["items"].get("has_more")
                   for s in page.data):
                fetched.objects = self._pool.submit(
                    lambda: [complete_subscription_items(reader, s) for s in page.data])
        elif self._resource.name == "invoices":
            # Different invoices' lines are independent: fetched side by side (the limiter
            # keeps the global and per-endpoint rates).
            for invoice in page.data:
                lines = invoice.get("lines")
                if (isinstance(lines, Mapping) and lines.get("has_more")
                        and isinstance(invoice.get("id"), str)):
                    fetched.lines[str(invoice["id"])] = self._pool.submit(
                        paged_invoice_lines, reader, invoice)
        return fetched
