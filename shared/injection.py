"""Handlers get their dependencies by name: one way to wire every service.

A handler is a plain ``async def handler(event, uow, *, clock, worker)``; its keyword-only
parameters name what it needs. A service lists its subscriptions as a table of such handlers, and
at start :func:`inject` binds each keyword from the service's dependencies (built in its
``bootstrap.py``). A keyword the dependencies do not have keeps its default (a unit test passes a
fake repository that way), and one with no default stops the start with the handler's name.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Awaitable, Callable, Iterable, Mapping

from shared.consumer import Subscription


class MissingDependency(RuntimeError):
    pass


def inject(
    subscriptions: Iterable[Subscription], dependencies: Mapping[str, object]
) -> list[Subscription]:
    """Each subscription with its handler's keyword-only parameters bound from
    ``dependencies``."""
    return [_bound(subscription, dependencies) for subscription in subscriptions]


def _bound(subscription: Subscription, dependencies: Mapping[str, object]) -> Subscription:
    name = subscription.handler_name  # before binding: a partial has no __name__
    if subscription.handler is not None:
        handler = _with_dependencies(subscription.handler, dependencies, name)
        return dataclasses.replace(subscription, name=name, handler=handler)
    if subscription.batch_handler is not None:
        batch_handler = _with_dependencies(subscription.batch_handler, dependencies, name)
        return dataclasses.replace(subscription, name=name, batch_handler=batch_handler)
    return subscription  # unreachable: a Subscription refuses to exist without a handler


def _with_dependencies(
    handler: Callable[..., Awaitable[None]], dependencies: Mapping[str, object], name: str
) -> Callable[..., Awaitable[None]]:
    wanted = [
        parameter
        for parameter in inspect.signature(handler).parameters.values()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    missing = [
        p.name
        for p in wanted
        if p.name not in dependencies and p.default is inspect.Parameter.empty
    ]
    if missing:
        raise MissingDependency(f"handler {name!r} needs {', '.join(missing)}, which nobody gives")
    given = {p.name: dependencies[p.name] for p in wanted if p.name in dependencies}
    return functools.partial(handler, **given) if given else handler
