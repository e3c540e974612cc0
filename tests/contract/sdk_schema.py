"""Stripe's API shapes as the installed ``stripe`` SDK types them, and checks against them.

The SDK's resource classes (``stripe.Subscription``, ``stripe.InvoiceLineItem``, ...) declare
every field of the object, nested classes included (``Subscription.PauseCollection``,
``InvoiceLineItem.Parent.SubscriptionItemDetails``), in class annotations generated from
Stripe's OpenAPI spec. This module reads those annotations and answers two questions:

- :func:`payload_problems`: does a payload (what the emulator serves) hold only fields the
  SDK knows, with values of the declared kinds?
- :func:`path_problem`: is a field path the code reads (``("items", "data", "[]", "price",
  "recurring", "interval")``) declared by the SDK?

:class:`ReadLog` wraps payloads in mappings that record every key the code reads, so the
paths checked are the ones the code really reads, not a list kept by hand.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from typing import Any, ForwardRef, Literal, Union

import stripe
from stripe._list_object import ListObject
from stripe._stripe_object import StripeObject, UntypedStripeObject

# A list element in a path.
ITEM = "[]"
# Iterating over a mapping (reading every key it has).
EVERY = "*"


@dataclass(frozen=True)
class Shape:
    """One node of the SDK's type tree."""

    kind: Literal["object", "list", "dict", "any", "scalar", "none", "union", "stripe_list"]
    cls: type | None = None  # object: the StripeObject subclass
    inner: tuple[Shape, ...] = ()  # list / dict / stripe_list: (element,); union: options
    scalar: tuple[type, ...] = ()  # scalar: accepted Python types
    literal: tuple[Any, ...] = ()  # scalar Literal values (not enforced: enums are open)


ANY = Shape("any")
NONE = Shape("none")


@cache
def resource_classes() -> dict[str, type]:
    """``object`` name -> SDK class, for every top-level resource class of the SDK."""
    found: dict[str, type] = {}
    for name in sorted(stripe._import_map):  # the SDK's lazily imported public names
        if name.startswith("Deleted") or not name[:1].isupper():
            continue  # DeletedCustomer shares "customer" with Customer
        value = getattr(stripe, name, None)
        if isinstance(value, type) and issubclass(value, StripeObject):
            object_name = getattr(value, "OBJECT_NAME", None)
            if isinstance(object_name, str) and object_name not in found:
                found[object_name] = value
    return found


@cache
def _imports_of(module_name: str) -> dict[str, tuple[str, str]]:
    """Names a module imports (its ``TYPE_CHECKING`` block included): alias -> (module,
    name). The SDK's annotations name classes only imported for type checking."""
    module = importlib.import_module(module_name)
    source = inspect.getsource(module)
    out: dict[str, tuple[str, str]] = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                out[alias.asname or alias.name] = (node.module, alias.name)
    return out


def _resolve_ref(name: str, module_name: str) -> type:
    found = _imports_of(module_name).get(name)
    if found is not None:
        value = getattr(importlib.import_module(found[0]), found[1], None)
        if isinstance(value, type):
            return value
    value = getattr(importlib.import_module(module_name), name, None)
    if isinstance(value, type):
        return value
    raise LookupError(f"the SDK names a type {name!r} ({module_name}) this check cannot find")


def shape_of(tp: Any, module: str) -> Shape:
    """The :class:`Shape` of one annotation made in ``module``."""
    if tp is Any or isinstance(tp, typing.TypeVar):  # ListObject's data: List[T]
        return ANY
    if tp is type(None):
        return NONE
    if isinstance(tp, ForwardRef):
        return shape_of(_resolve_ref(tp.__forward_arg__, module), module)
    if isinstance(tp, str):
        return shape_of(_resolve_ref(tp, module), module)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Union:
        return Shape("union", inner=tuple(shape_of(a, module) for a in args))
    if origin is Literal:
        return Shape("scalar", scalar=tuple({type(a) for a in args}), literal=args)
    if origin in (list, typing.List):  # noqa: UP006 - the SDK uses typing.List
        return Shape("list", inner=(shape_of(args[0], module),))
    if origin in (dict, typing.Dict):  # noqa: UP006
        return Shape("dict", inner=(shape_of(args[1], module),))
    if isinstance(origin, type) and issubclass(origin, UntypedStripeObject):
        return ANY
    if isinstance(origin, type) and issubclass(origin, ListObject):
        return Shape("stripe_list", inner=(shape_of(args[0], module),))
    if isinstance(tp, type):
        if issubclass(tp, UntypedStripeObject):
            return ANY
        if issubclass(tp, ListObject):
            return Shape("stripe_list", inner=(ANY,))
        if issubclass(tp, StripeObject):
            return Shape("object", cls=tp)
        if tp is bool:
            return Shape("scalar", scalar=(bool,))
        if tp is int:
            return Shape("scalar", scalar=(int,))
        if tp is float:
            return Shape("scalar", scalar=(int, float))
        if tp is Decimal:  # served as a decimal string
            return Shape("scalar", scalar=(str, int, float))
        if tp is str:
            return Shape("scalar", scalar=(str,))
        if tp is dict:
            return Shape("dict", inner=(ANY,))
    raise TypeError(f"unsupported SDK annotation {tp!r}")


@cache
def fields_of(cls: type) -> dict[str, Shape]:
    """Field name -> :class:`Shape` for an SDK class (its annotations, ClassVars left out)."""
    out: dict[str, Shape] = {}
    for klass in reversed(cls.__mro__):
        if not (isinstance(klass, type) and issubclass(klass, StripeObject)) \
                or klass is StripeObject:
            continue
        for name, tp in vars(klass).get("__annotations__", {}).items():
            if typing.get_origin(tp) is typing.ClassVar or name.startswith("_"):
                continue
            out[name] = shape_of(tp, klass.__module__)
    if issubclass(cls, ListObject):
        out.setdefault("object", Shape("scalar", scalar=(str,)))
    return out


def _options(shape: Shape) -> list[Shape]:
    return list(shape.inner) if shape.kind == "union" else [shape]


def _resource_of(payload: Any) -> type | None:
    if isinstance(payload, Mapping):
        name = payload.get("object")
        if isinstance(name, str):
            return resource_classes().get(name)
    return None


def _describe(shape: Shape) -> str:
    if shape.kind == "object" and shape.cls is not None:
        return shape.cls.__qualname__
    if shape.kind == "scalar":
        return "|".join(t.__name__ for t in shape.scalar)
    if shape.kind == "union":
        return " or ".join(_describe(s) for s in shape.inner)
    return shape.kind


# --------------------------------------------------------------------------- payloads


def payload_problems(payload: Any, shape: Shape | type | None = None,
                     path: str = "") -> list[str]:
    """Every field of ``payload`` the SDK does not declare, or whose value is of another
    kind, as ``"<path>: <problem>"``. ``shape`` defaults to the class named by the
    payload's ``object``."""
    if shape is None:
        cls = _resource_of(payload)
        if cls is None:
            return [f"{path or '<root>'}: no SDK class for object {payload.get('object')!r}"
                    if isinstance(payload, Mapping) else f"{path}: not an object"]
        shape = Shape("object", cls=cls)
    elif isinstance(shape, type):
        shape = Shape("object", cls=shape)
    problems: list[str] = []
    _check(payload, shape, path or "<root>", problems)
    return problems


def _check(value: Any, shape: Shape, path: str, problems: list[str]) -> None:
    options = _options(shape)
    if value is None:
        if not any(o.kind in ("none", "any") for o in options):
            problems.append(f"{path}: null where the SDK declares {_describe(shape)}")
        return
    fewest: list[str] | None = None  # the option the value fits best
    for option in options:
        found: list[str] = []
        if _check_one(value, option, path, found):
            if not found:
                return
            if fewest is None or len(found) < len(fewest):
                fewest = found
    if fewest is not None:
        problems.extend(fewest)
    else:
        problems.append(f"{path}: {type(value).__name__} {value!r:.60} where the SDK declares "
                        f"{_describe(shape)}")


def _check_one(value: Any, shape: Shape, path: str, problems: list[str]) -> bool:
    """False when ``value`` is not of ``shape``'s kind at all; else checks inside it."""
    kind = shape.kind
    if kind == "any":
        return True
    if kind == "none":
        return value is None
    if kind == "scalar":
        if isinstance(value, bool) and bool not in shape.scalar:
            return False
        return isinstance(value, shape.scalar)
    if kind == "list":
        if not isinstance(value, list):
            return False
        for index, element in enumerate(value):
            _check(element, shape.inner[0], f"{path}[{index}]", problems)
        return True
    if kind == "dict":
        if not isinstance(value, Mapping):
            return False
        for key, element in value.items():
            _check(element, shape.inner[0], f"{path}.{key}", problems)
        return True
    if kind == "stripe_list":
        if not isinstance(value, Mapping) or value.get("object") != "list":
            return False
        known = fields_of(ListObject)
        for key, element in value.items():
            if key == "data":
                if not isinstance(element, list):
                    problems.append(f"{path}.data: not a list")
                    continue
                for index, entry in enumerate(element):
                    _check(entry, shape.inner[0], f"{path}.data[{index}]", problems)
            elif key not in known:
                problems.append(f"{path}.{key}: field unknown to the SDK's ListObject")
            else:
                _check(element, known[key], f"{path}.{key}", problems)
        return True
    if kind == "object":
        if not isinstance(value, Mapping):
            return False
        assert shape.cls is not None
        cls = shape.cls
        named = _resource_of(value)
        if named is not None and not issubclass(named, cls) and "object" in fields_of(cls):
            return False  # an expandable field holding another resource
        known = fields_of(cls)
        for key, element in value.items():
            if key not in known:
                problems.append(f"{path}.{key}: field unknown to the SDK's {cls.__qualname__}")
                continue
            if cls is stripe.Event and key == "data" and isinstance(element, Mapping):
                _check_event_data(element, f"{path}.data", problems)
                continue
            _check(element, known[key], f"{path}.{key}", problems)
        return True
    raise AssertionError(kind)


def _check_event_data(data: Mapping[str, Any], path: str, problems: list[str]) -> None:
    """An event's ``data.object`` is typed by its ``object``; ``previous_attributes`` holds
    old values of the same fields."""
    obj = data.get("object")
    for key in data:
        if key not in ("object", "previous_attributes"):
            problems.append(f"{path}.{key}: field unknown to the SDK's Event.Data")
    cls = _resource_of(obj)
    if cls is None:
        problems.append(f"{path}.object: no SDK class for this event object")
        return
    _check(obj, Shape("object", cls=cls), f"{path}.object", problems)
    previous = data.get("previous_attributes")
    if isinstance(previous, Mapping):
        known = fields_of(cls)
        for key, element in previous.items():
            if key not in known:
                problems.append(f"{path}.previous_attributes.{key}: field unknown to the "
                                f"SDK's {cls.__qualname__}")
            else:
                _check_previous(element, known[key], f"{path}.previous_attributes.{key}",
                                problems)


def _check_previous(value: Any, shape: Shape, path: str, problems: list[str]) -> None:
    """Old values: nested hashes hold only the changed keys, so only names are checked
    inside objects; everything else is checked whole."""
    lists = [o for o in _options(shape) if o.kind == "stripe_list"]
    if isinstance(value, Mapping) and lists and "object" not in value:
        known = fields_of(ListObject)  # a list's changed part: its whole ``data``
        for key, element in value.items():
            if key not in known:
                problems.append(f"{path}.{key}: field unknown to the SDK's ListObject")
            elif key == "data":
                _check(element, Shape("list", inner=lists[0].inner), f"{path}.data", problems)
            else:
                _check(element, known[key], f"{path}.{key}", problems)
        return
    objects = [o for o in _options(shape) if o.kind == "object" and o.cls is not None]
    if isinstance(value, Mapping) and objects and _resource_of(value) is None:
        known = fields_of(objects[0].cls)  # type: ignore[arg-type]
        for key, element in value.items():
            if key not in known:
                problems.append(f"{path}.{key}: field unknown to the SDK's "
                                f"{objects[0].cls.__qualname__}")  # type: ignore[union-attr]
            else:
                _check_previous(element, known[key], f"{path}.{key}", problems)
        return
    _check(value, shape, path, problems)


# --------------------------------------------------------------------------- paths


def path_problem(cls: type, path: tuple[str, ...]) -> str | None:
    """None when the SDK declares ``path`` (keys, :data:`ITEM` for list elements,
    :data:`EVERY` for iterating) under ``cls``; else why not."""
    shapes = [Shape("object", cls=cls)]
    for depth, key in enumerate(path):
        if key == EVERY:
            return None
        nxt: list[Shape] = []
        for shape in shapes:
            for option in _options(shape):
                if option.kind == "any":
                    return None
                if option.kind == "object" and option.cls is not None:
                    known = fields_of(option.cls)
                    if key in known:
                        nxt.append(known[key])
                elif (option.kind == "list" and key == ITEM) or option.kind == "dict":
                    nxt.append(option.inner[0])
                elif option.kind == "stripe_list":
                    if key == "data":
                        nxt.append(Shape("list", inner=option.inner))
                    elif key in fields_of(ListObject):
                        nxt.append(fields_of(ListObject)[key])
        if not nxt:
            where = ".".join(path[:depth]) or "<root>"
            return (f"{cls.__qualname__}.{'.'.join(path)}: the SDK declares no {key!r} "
                    f"under {where}")
        shapes = nxt
    return None


@dataclass
class ReadLog:
    """Records the field paths code reads from payloads wrapped by :meth:`wrap`.

    A path is recorded relative to the nearest enclosing Stripe object (a mapping with an
    ``object`` the SDK knows, lists excepted), as ``(object name, path)``: an expanded
    price inside a subscription item is checked against ``stripe.Price``; an event's
    ``data.previous_attributes`` against the class of ``data.object``.
    """

    reads: set[tuple[str, tuple[str, ...]]] = field(default_factory=set)

    def wrap(self, payload: Any) -> Any:
        return self._wrap(payload, None, ())

    def _wrap(self, value: Any, anchor: str | None, path: tuple[str, ...]) -> Any:
        if isinstance(value, Mapping):
            name = value.get("object")
            if isinstance(name, str) and name != "list" and name in resource_classes():
                anchor, path = name, ()
            return _Traced(self, value, anchor, path)
        if isinstance(value, list):
            return [self._wrap(v, anchor, (*path, ITEM)) for v in value]
        return value

    def record(self, anchor: str | None, path: tuple[str, ...]) -> None:
        if anchor is not None:
            self.reads.add((anchor, path))

    def problems(self) -> list[str]:
        out = []
        for anchor, path in sorted(self.reads):
            problem = path_problem(resource_classes()[anchor], path)
            if problem:
                out.append(problem)
        return out


class _Traced(Mapping[str, Any]):
    """A read-only mapping that records the keys read from it."""

    def __init__(self, log: ReadLog, data: Mapping[str, Any], anchor: str | None,
                 path: tuple[str, ...]) -> None:
        self._log = log
        self._data = data
        self._anchor = anchor
        self._path = path

    def _child(self, key: str) -> Any:
        value = self._data[key]
        if (self._anchor == "event" and self._path == ("data",)
                and key == "previous_attributes" and isinstance(value, Mapping)):
            obj = self._data.get("object")
            name = obj.get("object") if isinstance(obj, Mapping) else None
            if isinstance(name, str) and name in resource_classes():
                return _Traced(self._log, value, name, ())
        return self._log._wrap(value, self._anchor, (*self._path, key))

    def __getitem__(self, key: str) -> Any:
        self._log.record(self._anchor, (*self._path, key))
        return self._child(key)

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self._log.record(self._anchor, (*self._path, key))
        return self._child(key) if key in self._data else default

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self._log.record(self._anchor, (*self._path, key))
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        self._log.record(self._anchor, (*self._path, EVERY))
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)
