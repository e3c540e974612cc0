"""Stripe-shaped dicts (current API, 2026-10-28.endive) -> domain records, or a Skip.

Every ``parse_*`` function takes whatever it is given (a dict from ``to_dict()``, a webhook
payload, a mirror row's ``raw``) and returns a record or a :class:`~nrr.domain.records.Skip`
naming the object and the reason. Nothing here raises on bad input: missing required
fields, wrong types and unknown shapes become a Skip for that one object only. Unknown
enum values (a new status, a new interval) are kept as strings: the rules that read them
treat an unknown status as not counted and an unknown interval as unusable (the item then
counts 0 and :mod:`nrr.domain.pricing` says why).

Normal data that is not malformed: ``quantity: null`` on metered items, negative
proration lines, deleted customers (``{"id", "object", "deleted": true}``), invoice lines
that are one-off invoice items (they are dropped, not skipped: they are never MRR).

Expandable fields (``customer``, ``product``, ``source.coupon``, ``discounts[]``) are
accepted as ids or as expanded objects; expanded objects are parsed as well.

This is the one reading of each Stripe object: the mirror store
(``integrations.stripe_mirror``) derives its columns from these records, and a Skip is the
reason it quarantines the object with. What only the mirror keeps rides along on the
records: the payloads of embedded items and lines, whether an embedded list was complete,
and one-off invoice lines (``one_off`` / ``one_off_lines``), which are never MRR.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from nrr.domain import fields
from nrr.domain.history import mark_gaps
from nrr.domain.records import (
    Coupon,
    CurrencyOption,
    Customer,
    CustomerData,
    Discount,
    Invoice,
    InvoiceLine,
    ObservedChange,
    Price,
    Product,
    Skip,
    Subscription,
    SubscriptionItem,
    Tier,
    TransformQuantity,
)

# The field readers are shared with the mirror; a FieldError skips the one object.
_Bad = fields.FieldError
_str = fields.text
_int = fields.integer
_bool = fields.flag
_decimal = fields.decimal
_dict = fields.mapping
_list = fields.entries
_ref = fields.ref
_currency = fields.currency


def _get(obj: Mapping[str, Any], key: str, *, required: bool = False) -> Any:
    value = obj.get(key)
    if value is None and required:
        raise _Bad(f"missing {key}")
    return value


def _req_str(obj: Mapping[str, Any], key: str) -> str:
    value = _str(obj, key, required=True)
    assert value is not None
    return value


def _req_id(obj: Mapping[str, Any]) -> str:
    value = _str(obj, "id")
    if not value:
        raise _Bad("missing or empty id")
    return value


def _complete(obj: Mapping[str, Any], key: str) -> bool:
    """Does the embedded list object ``key`` hold every entry (``has_more`` false)?"""
    value = obj.get(key)
    return isinstance(value, Mapping) and bool(value) and not value.get("has_more", False)


def _req_int(obj: Mapping[str, Any], key: str) -> int:
    value = _int(obj, key, required=True)
    assert value is not None
    return value


def _object_id(obj: Any) -> str | None:
    if isinstance(obj, Mapping):
        value = obj.get("id")
        return value if isinstance(value, str) else None
    return None


def _skip(object_type: str, obj: Any, reason: str) -> Skip:
    return Skip(object_type, _object_id(obj), reason)


def _not_a_dict(object_type: str, obj: Any) -> Skip | None:
    if type(obj) is not dict and not isinstance(obj, Mapping):
        return Skip(object_type, None, f"{type(obj).__name__} is not a {object_type} object")
    return None


# --------------------------------------------------------------------------- objects


def parse_customer(obj: Any, found_discounts: dict[str, Any] | None = None) -> Customer | Skip:
    """A customer; an expanded ``discount`` is stashed in ``found_discounts`` by id."""
    bad = _not_a_dict("customer", obj)
    if bad:
        return bad
    try:
        cid = _req_id(obj)
        address = _dict(obj, "address") or {}
        metadata_raw = _dict(obj, "metadata") or {}
        metadata = {str(k): str(v) for k, v in metadata_raw.items() if v is not None}
        discount_ids: tuple[str, ...] = ()
        single = obj.get("discount")
        if single is not None:
            ref = _ref(single, "discount")
            discount_ids = (ref,) if ref else ()
        customer = Customer(
            id=cid,
            email=_str(obj, "email"),
            country=_str(address, "country"),
            currency=_currency(_str(obj, "currency")),
            metadata=metadata,
            deleted=_bool(obj, "deleted"),
            livemode=_bool(obj, "livemode"),
            discount_ids=discount_ids,
            name=_str(obj, "name"),
            created=_int(obj, "created"),
        )
    except _Bad as exc:
        return _skip("customer", obj, str(exc))
    if discount_ids and isinstance(single, Mapping) and found_discounts is not None:
        found_discounts[discount_ids[0]] = single
    return customer


def parse_product(obj: Any) -> Product | Skip:
    bad = _not_a_dict("product", obj)
    if bad:
        return bad
    try:
        return Product(id=_req_id(obj), name=_str(obj, "name"), active=_bool(obj, "active", True),
                       livemode=_bool(obj, "livemode"), created=_int(obj, "created"))
    except _Bad as exc:
        return _skip("product", obj, str(exc))


def _tiers(raw: list[Any]) -> tuple[Tier, ...]:
    tiers = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, Mapping):
            raise _Bad(f"tier {index} is not an object")
        up_to = entry.get("up_to")
        if up_to == "inf":
            up_to = None
        if up_to is not None and (isinstance(up_to, bool) or not isinstance(up_to, int)):
            raise _Bad(f"tier {index} up_to {up_to!r} is not an integer or 'inf'")
        unit = _decimal(entry, "unit_amount_decimal")
        if unit is None:
            unit = _decimal(entry, "unit_amount")
        flat = _decimal(entry, "flat_amount_decimal")
        if flat is None:
            flat = _decimal(entry, "flat_amount")
        tiers.append(Tier(up_to=up_to, unit_amount_decimal=unit, flat_amount_decimal=flat))
    if tiers and any(t.up_to is None for t in tiers[:-1]):
        raise _Bad("only the last tier may be unbounded")
    return tuple(tiers)


def parse_price(obj: Any) -> Price | Skip:
    bad = _not_a_dict("price", obj)
    if bad:
        return bad
    try:
        pid = _req_id(obj)
        currency = _currency(_req_str(obj, "currency"))
        assert currency is not None
        recurring = _dict(obj, "recurring")
        interval = interval_count = usage_type = None
        if recurring is not None:
            interval = _str(recurring, "interval", required=True)
            interval_count = _int(recurring, "interval_count")
            usage_type = _str(recurring, "usage_type")
            if interval_count is not None and interval_count <= 0:
                raise _Bad(f"recurring.interval_count {interval_count} is not positive")
        elif obj.get("object") == "plan":  # legacy Plan shape (interval at the top level)
            interval = _str(obj, "interval")
            interval_count = _int(obj, "interval_count")
            usage_type = _str(obj, "usage_type")
        unit = _decimal(obj, "unit_amount_decimal")
        if unit is None:
            unit = _decimal(obj, "unit_amount")
        if unit is None and obj.get("object") == "plan":
            unit = _decimal(obj, "amount")
        transform_raw = _dict(obj, "transform_quantity")
        transform = None
        if transform_raw is not None:
            divide_by = _int(transform_raw, "divide_by", required=True)
            assert divide_by is not None
            if divide_by <= 0:
                raise _Bad(f"transform_quantity.divide_by {divide_by} is not positive")
            transform = TransformQuantity(divide_by, _str(transform_raw, "round") or "up")
        options: dict[str, CurrencyOption] = {}
        for code, raw in (_dict(obj, "currency_options") or {}).items():
            if not isinstance(raw, Mapping):
                raise _Bad(f"currency_options.{code} is not an object")
            option_unit = _decimal(raw, "unit_amount_decimal")
            if option_unit is None:
                option_unit = _decimal(raw, "unit_amount")
            options[str(code).lower()] = CurrencyOption(
                unit_amount_decimal=option_unit,
                tiers=_tiers(_list(raw, "tiers")),
                tax_behavior=_str(raw, "tax_behavior"),
            )
        return Price(
            id=pid,
            currency=currency,
            product_id=_ref(obj.get("product"), "product"),
            billing_scheme=_str(obj, "billing_scheme") or "per_unit",
            unit_amount_decimal=unit,
            tiers=_tiers(_list(obj, "tiers")),
            tiers_mode=_str(obj, "tiers_mode"),
            transform_quantity=transform,
            interval=interval,
            interval_count=interval_count or 1,
            usage_type=usage_type or "licensed",
            tax_behavior=_str(obj, "tax_behavior"),
            currency_options=options,
            nickname=_str(obj, "nickname"),
            livemode=_bool(obj, "livemode"),
            active=_bool(obj, "active", True),
            type=_str(obj, "type"),
            created=_int(obj, "created"),
        )
    except _Bad as exc:
        return _skip("price", obj, str(exc))


def parse_coupon(obj: Any) -> Coupon | Skip:
    bad = _not_a_dict("coupon", obj)
    if bad:
        return bad
    try:
        cid = _req_id(obj)
        percent = _decimal(obj, "percent_off")
        amount = _int(obj, "amount_off")
        if percent is None and amount is None and not _bool(obj, "deleted"):
            raise _Bad("neither percent_off nor amount_off")
        if percent is not None and not (0 <= percent <= 100):
            raise _Bad(f"percent_off {percent} is outside 0..100")
        if amount is not None and amount < 0:
            raise _Bad(f"amount_off {amount} is negative")
        by_currency: dict[str, int] = {}
        for code, raw in (_dict(obj, "currency_options") or {}).items():
            if isinstance(raw, Mapping):
                value = _int(raw, "amount_off")
                if value is not None:
                    by_currency[str(code).lower()] = value
        return Coupon(
            id=cid,
            percent_off=percent,
            amount_off=amount,
            currency=_currency(_str(obj, "currency")),
            duration=_str(obj, "duration") or "forever",
            duration_in_months=_int(obj, "duration_in_months"),
            amount_off_by_currency=by_currency,
            livemode=_bool(obj, "livemode"),
            created=_int(obj, "created"),
        )
    except _Bad as exc:
        return _skip("coupon", obj, str(exc))


def _linked(obj: Mapping[str, Any], key: str, found_on: Mapping[str, str | None] | None
            ) -> str | None:
    if key in obj or found_on is None:
        return _ref(obj.get(key), key)
    return found_on.get(f"{key}_id")


def parse_discount(obj: Any, found_on: Mapping[str, str | None] | None = None
                   ) -> tuple[Discount, Coupon | None] | Skip:
    """A discount and, when ``source.coupon`` is expanded, its coupon.

    ``found_on`` names the object the discount was embedded in (``customer_id``,
    ``subscription_id``, ``subscription_item_id``, ``invoice_id``): where the discount is
    attached, its own fields say so; the parent only fills a field the shape lacks (a
    customer-level discount seen on an invoice, ``"invoice": null``, is no invoice discount),
    and the customer when the discount names none.
    """
    bad = _not_a_dict("discount", obj)
    if bad:
        return bad
    try:
        did = _req_id(obj)
        source = _dict(obj, "source") or {}
        coupon_raw = source.get("coupon")
        coupon_id = _ref(coupon_raw, "source.coupon")
        if coupon_id is None:
            raise _Bad("no coupon (source.coupon)")
        coupon: Coupon | None = None
        if isinstance(coupon_raw, Mapping):
            parsed = parse_coupon(coupon_raw)
            if isinstance(parsed, Skip):
                raise _Bad(f"coupon {coupon_id}: {parsed.reason}")
            coupon = parsed
        return Discount(
            id=did,
            coupon_id=coupon_id,
            customer_id=_ref(obj.get("customer"), "customer") or (found_on or {}).get("customer_id"),
            subscription_id=_linked(obj, "subscription", found_on),
            subscription_item_id=_linked(obj, "subscription_item", found_on),
            start=_int(obj, "start"),
            end=_int(obj, "end"),
            invoice_id=_linked(obj, "invoice", found_on),
        ), coupon
    except _Bad as exc:
        return _skip("discount", obj, str(exc))


def inclusive_tax_percent(rates: Any, key: str) -> Decimal | None:
    """The percent of tax included by a list of Stripe tax rates (``tax_rates`` of an item,
    ``default_tax_rates`` of a subscription): the sum of the ``percentage`` of the rates
    with ``inclusive: true``. None when the list is empty (an item then follows its
    subscription's defaults). A rate given only by its id says nothing: it counts 0."""
    if rates is None:
        return None
    if not isinstance(rates, list):
        raise _Bad(f"{key} is not a list: {rates!r:.80}")
    if not rates:
        return None
    total = Decimal(0)
    for rate in rates:
        if isinstance(rate, Mapping) and _bool(rate, "inclusive"):
            percent = _decimal(rate, "percentage")
            if percent is None or not Decimal(0) <= percent < Decimal(1000):
                raise _Bad(f"{key}: tax rate {rate.get('id')!r:.40} has percentage "
                           f"{rate.get('percentage')!r:.40}")
            total += percent
    return total


def _discount_refs(raw: list[Any], found: dict[str, Any]) -> tuple[str, ...]:
    """Ids of a ``discounts`` list; expanded discount objects are stashed in ``found``."""
    ids = []
    for entry in raw:
        ref = _ref(entry, "discounts[]")
        if ref is None:
            continue
        if isinstance(entry, Mapping):
            found[ref] = entry
        ids.append(ref)
    return tuple(ids)


def parse_subscription_item(obj: Any, subscription_id: str | None = None,
                            found_discounts: dict[str, Any] | None = None,
                            found_prices: dict[str, Any] | None = None) -> SubscriptionItem | Skip:
    bad = _not_a_dict("subscription_item", obj)
    if bad:
        return bad
    try:
        iid = _req_id(obj)
        sub_id = _str(obj, "subscription") or subscription_id
        if sub_id is None:
            raise _Bad("missing subscription")
        price_raw = obj.get("price") or obj.get("plan")
        price_id = _ref(price_raw, "price")
        if price_id is None:
            raise _Bad("missing price")
        if isinstance(price_raw, Mapping) and found_prices is not None:
            found_prices[price_id] = price_raw
        quantity = _int(obj, "quantity")
        if quantity is not None and quantity < 0:
            raise _Bad(f"quantity {quantity} is negative")
        return SubscriptionItem(
            id=iid,
            subscription_id=sub_id,
            price_id=price_id,
            quantity=quantity,
            current_period_start=_int(obj, "current_period_start"),
            current_period_end=_int(obj, "current_period_end"),
            discount_ids=_discount_refs(_list(obj, "discounts"),
                                        found_discounts if found_discounts is not None else {}),
            created=_int(obj, "created"),
            payload=obj,
            inclusive_tax_percent=inclusive_tax_percent(obj.get("tax_rates"), "tax_rates"),
        )
    except _Bad as exc:
        return _skip("subscription_item", obj, str(exc))


def parse_subscription(
    obj: Any,
    found_discounts: dict[str, Any] | None = None,
    found_prices: dict[str, Any] | None = None,
) -> tuple[Subscription, list[Skip]] | Skip:
    """A subscription with its items. An item that cannot be understood is skipped alone."""
    bad = _not_a_dict("subscription", obj)
    if bad:
        return bad
    found_discounts = found_discounts if found_discounts is not None else {}
    try:
        sid = _req_id(obj)
        customer_id = _ref(obj.get("customer"), "customer")
        if customer_id is None:
            raise _Bad("missing customer")
        status = _req_str(obj, "status")
        currency = _currency(_req_str(obj, "currency"))
        assert currency is not None
        skips: list[Skip] = []
        items = []
        for raw in _list(obj, "items"):
            parsed = parse_subscription_item(raw, sid, found_discounts, found_prices)
            if isinstance(parsed, Skip):
                skips.append(parsed)
            else:
                items.append(parsed)
        paused_at = None
        details = _dict(obj, "status_details")
        if details is not None:
            paused = _dict(details, "paused")
            if paused is not None:
                paused_at = _int(paused, "transitioned_at")
        pause = _dict(obj, "pause_collection") or None  # {} pauses nothing
        return Subscription(
            id=sid,
            customer_id=customer_id,
            status=status,
            currency=currency,
            start_date=_int(obj, "start_date"),
            created=_int(obj, "created"),
            trial_start=_int(obj, "trial_start"),
            trial_end=_int(obj, "trial_end"),
            cancel_at=_int(obj, "cancel_at"),
            cancel_at_period_end=_bool(obj, "cancel_at_period_end"),
            canceled_at=_int(obj, "canceled_at"),
            ended_at=_int(obj, "ended_at"),
            paused_at=paused_at,
            pause_collection_behavior=(_str(pause, "behavior") or "void") if pause is not None else None,
            pause_collection_resumes_at=_int(pause, "resumes_at") if pause is not None else None,
            billing_cycle_anchor=_int(obj, "billing_cycle_anchor"),
            items=tuple(items),
            discount_ids=_discount_refs(_list(obj, "discounts"), found_discounts),
            livemode=_bool(obj, "livemode"),
            items_complete=_complete(obj, "items"),
            default_inclusive_tax_percent=inclusive_tax_percent(obj.get("default_tax_rates"),
                                                                "default_tax_rates"),
        ), skips
    except _Bad as exc:
        return _skip("subscription", obj, str(exc))


def parse_invoice_line(obj: Any, *, invoice_id: str | None = None, invoice_status: str | None = None,
                       customer_id: str | None = None, subscription_id: str | None = None,
                       currency: str | None = None, one_off: bool = False
                       ) -> InvoiceLine | Skip | None:
    """A subscription-item line, a Skip, or None for lines that are never MRR (one-off
    items). With ``one_off`` those come back too, with no ``subscription_item_id``.

    ``invoice_id`` and the other keywords describe the invoice the line belongs to (its
    own ``invoice`` field when none is given); ``currency`` is the invoice's, for a line
    that names none.
    """
    bad = _not_a_dict("invoice_line", obj)
    if bad:
        return bad
    try:
        lid = _req_id(obj)
        parent = _dict(obj, "parent") or {}
        details = _dict(parent, "subscription_item_details")
        item_id = _str(details, "subscription_item") if details is not None else None
        if item_id is None and not one_off:
            return None  # one-off invoice item: never MRR
        details = details or {}
        invoice_id = invoice_id or _str(obj, "invoice")
        if not invoice_id:
            raise _Bad(f"line {lid} names no invoice")
        pricing = _dict(obj, "pricing") or {}
        price_details = _dict(pricing, "price_details") or {}
        price_id = _ref(price_details.get("price"), "pricing.price_details.price")
        if price_id is None and item_id is not None:
            raise _Bad("subscription item line without pricing.price_details.price")
        period = _dict(obj, "period")
        if period is None:
            raise _Bad("missing period")
        start = _req_int(period, "start")
        end = _req_int(period, "end")
        if end < start:
            raise _Bad(f"period ends ({end}) before it starts ({start})")
        quantity = _int(obj, "quantity")
        amount = _req_int(obj, "amount")
        line_currency = _currency(_str(obj, "currency")) or currency
        if line_currency is None:
            raise _Bad("missing currency")
        discount_total = 0
        discount_ids: list[str] = []
        for entry in _list(obj, "discount_amounts"):
            if not isinstance(entry, Mapping):
                raise _Bad("discount_amounts[] is not an object")
            value = _int(entry, "amount") or 0
            ref = _ref(entry.get("discount"), "discount_amounts[].discount")
            discount_total += value
            if ref is not None and value and ref not in discount_ids:
                discount_ids.append(ref)
        credited: bool | None = None
        proration = _bool(details, "proration")
        proration_details = _dict(details, "proration_details")
        if proration_details is not None and proration:
            credited = proration_details.get("credited_items") is not None
        tax_inclusive = 0
        for entry in _list(obj, "taxes"):
            if isinstance(entry, Mapping) and entry.get("tax_behavior") == "inclusive":
                tax_inclusive += _int(entry, "amount") or 0
        line_subscription = (_str(details, "subscription")
                             or _ref(obj.get("subscription"), "subscription"))
        if line_subscription is None and item_id is not None:
            line_subscription = subscription_id
        return InvoiceLine(
            id=lid,
            invoice_id=invoice_id,
            invoice_status=invoice_status,
            customer_id=customer_id,
            subscription_id=line_subscription,
            subscription_item_id=item_id,
            price_id=price_id,
            quantity=quantity,
            period_start=start,
            period_end=end,
            amount=amount,
            currency=line_currency,
            proration=proration,
            discount_ids=tuple(discount_ids),
            discount_amount=discount_total,
            tax_inclusive_amount=tax_inclusive,
            credited=credited,
            livemode=_bool(obj, "livemode"),
            quantity_decimal=_decimal(obj, "quantity_decimal"),
            payload=obj,
        )
    except _Bad as exc:
        return _skip("invoice_line", obj, str(exc))


def parse_invoice(obj: Any, found_discounts: dict[str, Any] | None = None, *,
                  one_off_lines: bool = False
                  ) -> tuple[Invoice, list[InvoiceLine], list[Skip]] | Skip:
    """An invoice with its subscription lines (and its one-off lines with
    ``one_off_lines``). A line that cannot be understood is skipped alone."""
    bad = _not_a_dict("invoice", obj)
    if bad:
        return bad
    found_discounts = found_discounts if found_discounts is not None else {}
    try:
        iid = _req_id(obj)
        customer_id = _ref(obj.get("customer"), "customer")
        status = _str(obj, "status")
        currency = _currency(_req_str(obj, "currency"))
        assert currency is not None
        parent = _dict(obj, "parent") or {}
        sub_details = _dict(parent, "subscription_details") or {}
        subscription_id = _ref(sub_details.get("subscription"), "subscription")
        transitions = _dict(obj, "status_transitions") or {}
        invoice = Invoice(
            id=iid,
            customer_id=customer_id,
            subscription_id=subscription_id,
            status=status,
            currency=currency,
            billing_reason=_str(obj, "billing_reason"),
            created=_int(obj, "created"),
            period_start=_int(obj, "period_start"),
            period_end=_int(obj, "period_end"),
            finalized_at=_int(transitions, "finalized_at"),
            paid_at=_int(transitions, "paid_at"),
            voided_at=_int(transitions, "voided_at"),
            marked_uncollectible_at=_int(transitions, "marked_uncollectible_at"),
            total=_int(obj, "total"),
            discount_ids=_discount_refs(_list(obj, "discounts"), found_discounts),
            livemode=_bool(obj, "livemode"),
            lines_complete=_complete(obj, "lines"),
        )
        lines: list[InvoiceLine] = []
        skips: list[Skip] = []
        for raw in _list(obj, "lines"):
            parsed = parse_invoice_line(raw, invoice_id=iid, invoice_status=status,
                                        customer_id=customer_id, subscription_id=subscription_id,
                                        currency=currency, one_off=one_off_lines)
            if isinstance(parsed, Skip):
                skips.append(parsed)
            elif parsed is not None:
                lines.append(parsed)
        return invoice, lines, skips
    except _Bad as exc:
        return _skip("invoice", obj, str(exc))


# --------------------------------------------------------------------------- events


# Objects of events that name a customer (``customer`` is a field of theirs).
_OBJECTS_WITH_A_CUSTOMER = frozenset({"subscription", "discount", "invoice",
                                      "subscription_schedule", "invoiceitem"})


def event_customer_id(event: Any) -> str | None:
    """The customer an event is about, as an id: ``data.object.customer`` of an object that
    has one (an expanded customer counts as no id); None otherwise or on a malformed event."""
    if type(event) is not dict and not isinstance(event, Mapping):
        return None
    data = _dict(event, "data") or {}
    obj = _dict(data, "object") or {}
    if obj.get("object") not in _OBJECTS_WITH_A_CUSTOMER:
        return None
    customer = obj.get("customer")
    return customer if isinstance(customer, str) and customer else None


def observed_changes(event: Any) -> list[ObservedChange] | Skip:
    """Changes an event dates exactly (used to refine the recent past).

    - ``customer.subscription.updated`` whose ``previous_attributes`` hold ``items``: every
      item whose price or quantity differs gets an ``item`` change at the event's ``created``;
      ``pause_collection`` in ``previous_attributes`` gives a ``pause_collection`` change.
    - ``customer.discount.deleted``: ``discount_removed`` at ``created``.
    - ``customer.subscription.paused`` (or an update to status ``paused``): a ``status``
      change with ``paused=True`` at ``status_details.paused.transitioned_at`` (else
      ``created``); ``customer.subscription.resumed`` (or an update from ``paused``):
      ``paused=False`` at ``created``. They keep a pause dated after a resume has cleared
      it from the subscription.
    Other events give no change.
    """
    bad = _not_a_dict("event", event)
    if bad:
        return bad
    try:
        eid = _req_str(event, "id")
        kind = _req_str(event, "type")
        created = _req_int(event, "created")
        data = _dict(event, "data") or {}
        obj = _dict(data, "object") or {}
        previous = _dict(data, "previous_attributes") or {}
        changes: list[ObservedChange] = []
        if kind == "customer.discount.deleted":
            did = _str(obj, "id")
            sub_id = _str(obj, "subscription") or ""
            if did:
                changes.append(ObservedChange("discount_removed", created, sub_id, eid,
                                              subscription_item_id=_str(obj, "subscription_item"),
                                              discount_id=did))
        elif kind == "customer.subscription.updated":
            sid = _req_str(obj, "id")
            if "items" in previous:
                before: dict[str, tuple[str | None, int | None]] = {}
                for raw in _list(previous, "items"):
                    if isinstance(raw, Mapping) and isinstance(raw.get("id"), str):
                        before[raw["id"]] = (_ref(raw.get("price"), "price"), _int(raw, "quantity"))
                for raw in _list(obj, "items"):
                    if not isinstance(raw, Mapping) or not isinstance(raw.get("id"), str):
                        continue
                    now = (_ref(raw.get("price"), "price"), _int(raw, "quantity"))
                    if before.get(raw["id"]) != now:
                        changes.append(ObservedChange("item", created, sid, eid,
                                                      subscription_item_id=raw["id"],
                                                      price_id=now[0], quantity=now[1]))
            if "pause_collection" in previous:
                changes.append(ObservedChange("pause_collection", created, sid, eid,
                                              paused=obj.get("pause_collection") is not None))
            if "status" in previous and (obj.get("status") == "paused") != (previous.get("status") == "paused"):
                changes.append(_status_change(obj, sid, eid, created))
        elif kind in ("customer.subscription.paused", "customer.subscription.resumed"):
            changes.append(_status_change(obj, _req_str(obj, "id"), eid, created,
                                          paused=kind == "customer.subscription.paused"))
        return changes
    except _Bad as exc:
        return _skip("event", event, str(exc))


def _status_change(obj: Mapping[str, Any], sid: str, eid: str, created: int, *,
                   paused: bool | None = None) -> ObservedChange:
    """A subscription paused (at ``status_details.paused.transitioned_at``) or resumed."""
    if paused is None:
        paused = obj.get("status") == "paused"
    at = created
    if paused:
        details = _dict(_dict(obj, "status_details") or {}, "paused") or {}
        at = _int(details, "transitioned_at") or created
    return ObservedChange("status", at, sid, eid, paused=paused)


# --------------------------------------------------------------------------- one customer


def _records(raw: Any) -> Iterable[Any]:
    return raw if isinstance(raw, list) else []


def customer_data_from_stripe(customer_id: str, objects: Mapping[str, Any], *,
                              livemode: bool | None = None) -> tuple[CustomerData, list[Skip]]:
    """Build one customer's :class:`CustomerData` from Stripe-shaped lists.

    ``objects`` maps ``customers``, ``prices``, ``coupons``, ``discounts``,
    ``subscriptions``, ``invoices`` and optionally ``events`` to lists of dicts (extra
    objects of other customers are ignored). With ``livemode`` set, objects of the other
    mode are left out (and recorded as skips). Never raises on bad input.
    """
    skips: list[Skip] = []
    found_discounts: dict[str, Any] = {}
    found_prices: dict[str, Any] = {}

    def other_mode(kind: str, raw: Any) -> bool:
        if livemode is None or not isinstance(raw, Mapping) or "livemode" not in raw:
            return False
        if bool(raw.get("livemode")) != livemode:
            skips.append(_skip(kind, raw, "object from the other mode (livemode) than the key's"))
            return True
        return False

    customer: Customer | None = None
    for raw in _records(objects.get("customers")):
        if _object_id(raw) != customer_id or other_mode("customer", raw):
            continue
        parsed = parse_customer(raw, found_discounts)
        if isinstance(parsed, Skip):
            skips.append(parsed)
        else:
            customer = parsed
    if customer is None:
        customer = Customer(id=customer_id, deleted=True)

    subscriptions: list[Subscription] = []
    for raw in _records(objects.get("subscriptions")):
        if other_mode("subscription", raw):
            continue
        parsed_sub = parse_subscription(raw, found_discounts, found_prices)
        if isinstance(parsed_sub, Skip):
            skips.append(parsed_sub)
            continue
        sub, item_skips = parsed_sub
        if sub.customer_id != customer_id:
            continue
        subscriptions.append(sub)
        skips.extend(item_skips)

    invoices: dict[str, Invoice] = {}
    lines: list[InvoiceLine] = []
    for raw in _records(objects.get("invoices")):
        if other_mode("invoice", raw):
            continue
        parsed_inv = parse_invoice(raw, found_discounts)
        if isinstance(parsed_inv, Skip):
            skips.append(parsed_inv)
            continue
        inv, inv_lines, line_skips = parsed_inv
        if inv.customer_id not in (customer_id, None):
            continue
        invoices[inv.id] = inv
        lines.extend(inv_lines)
        skips.extend(line_skips)

    prices: dict[str, Price] = {}
    for raw in [*found_prices.values(), *_records(objects.get("prices"))]:
        parsed_price = parse_price(raw)
        if isinstance(parsed_price, Skip):
            skips.append(parsed_price)
            continue
        known = prices.get(parsed_price.id)
        # The list shape omits tiers unless expanded: keep whichever copy has them.
        if known is None or (not known.tiers and parsed_price.tiers):
            prices[parsed_price.id] = parsed_price

    coupons: dict[str, Coupon] = {}
    discounts: dict[str, Discount] = {}
    for raw in [*found_discounts.values(), *_records(objects.get("discounts"))]:
        parsed_disc = parse_discount(raw)
        if isinstance(parsed_disc, Skip):
            skips.append(parsed_disc)
            continue
        disc, coupon = parsed_disc
        if disc.customer_id not in (customer_id, None):
            continue
        discounts[disc.id] = disc
        if coupon is not None:
            coupons.setdefault(coupon.id, coupon)
    for raw in _records(objects.get("coupons")):
        parsed_coupon = parse_coupon(raw)
        if isinstance(parsed_coupon, Skip):
            skips.append(parsed_coupon)
        else:
            coupons[parsed_coupon.id] = parsed_coupon

    observed: list[ObservedChange] = []
    for raw in _records(objects.get("events")):
        parsed_changes = observed_changes(raw)
        if isinstance(parsed_changes, Skip):
            skips.append(parsed_changes)
        else:
            observed.extend(parsed_changes)
    removed = {c.discount_id: c.at for c in observed if c.kind == "discount_removed"}
    for did, at in removed.items():
        if did in discounts:
            known_disc = discounts[did]
            discounts[did] = Discount(
                known_disc.id, known_disc.coupon_id, known_disc.customer_id,
                known_disc.subscription_id, known_disc.subscription_item_id, known_disc.start,
                known_disc.end, at, known_disc.invoice_id)

    data = CustomerData(
        customer=customer,
        subscriptions=tuple(subscriptions),
        invoices=invoices,
        # These are all the lines known: mark where service has gaps (history module doc).
        lines=tuple(mark_gaps(lines)),
        discounts=discounts,
        prices=prices,
        coupons=coupons,
        observed=tuple(observed),
    )
    return data, skips
