"""The event catalog: every message Boreas puts on ``boreas.events``, one frozen class per topic.

Each class names what happened and carries its routing key (``TOPIC``, ``entity.action``) and its
schema version (``VERSION``, ``major.minor``). An additive change bumps the minor version; a
breaking change is a new class with the next major, kept beside the old one until every consumer
has moved. The changelog sits above each ``VERSION``; ``tests/contract`` pins every schema to its
version, so a change without a bump fails.

On the wire each event travels inside a CloudEvents 1.0 structured envelope (:class:`Envelope`):
``type`` is ``boreas.<topic>.v<major>``, and the full version rides in the ``dataversion``
extension attribute. Consumers ignore fields they do not know.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared import tracing

CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json"
# Public topics travel on EXCHANGE, which external subscribers may read; internal ones (sealed
# secrets, webhook URLs, the services' own coordination) on INTERNAL_EXCHANGE, which they may not.
EXCHANGE = "boreas.events"
INTERNAL_EXCHANGE = "boreas.internal"


class Audience(enum.StrEnum):
    """Who may read an event: every catalog class states its own, there is no default."""

    PUBLIC = "public"  # part of the contract for external systems, on EXCHANGE
    INTERNAL = "internal"  # the services' own, on INTERNAL_EXCHANGE


# Every class of this module that names a TOPIC registers itself here, in the order written:
# the catalog (below), and so the bus, the docs, AsyncAPI and the contract tests, follow from it.
_REGISTERED: list[type[Event]] = []


def _register(cls: type[Event]) -> None:
    taken = {known.TOPIC: known.__name__ for known in _REGISTERED}
    if cls.TOPIC in taken:
        raise TypeError(f"{cls.__name__} and {taken[cls.TOPIC]} both name topic {cls.TOPIC!r}")
    _REGISTERED.append(cls)


class Event(BaseModel):
    """Base of every catalog entry: immutable, tolerant of unknown fields."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    TOPIC: ClassVar[str]
    VERSION: ClassVar[str]
    # The field that becomes the CloudEvent ``subject`` (the instance id where there is one).
    SUBJECT_FIELD: ClassVar[str | None] = None
    # Who may read it. No default: each class with a TOPIC states its own (checked below), so
    # a new event is never public, or internal, by omission. The bus, the docs and AsyncAPI
    # all follow it.
    AUDIENCE: ClassVar[Audience]

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if hasattr(cls, "TOPIC") and not isinstance(cls.__dict__.get("AUDIENCE"), Audience):
            raise TypeError(
                f"{cls.__name__} must state its AUDIENCE (Audience.PUBLIC or Audience.INTERNAL)"
            )
        if "TOPIC" in cls.__dict__ and cls.__module__ == __name__:
            _register(cls)

    @classmethod
    def major(cls) -> int:
        return int(cls.VERSION.split(".")[0])

    @classmethod
    def ce_type(cls) -> str:
        return f"boreas.{cls.TOPIC}.v{cls.major()}"

    def subject(self) -> str | None:
        if self.SUBJECT_FIELD is None:
            return None
        value = getattr(self, self.SUBJECT_FIELD)
        return None if value is None else str(value)


class InstanceState(enum.StrEnum):
    REQUESTED = "requested"
    REJECTED = "rejected"
    PENDING = "pending"
    RUNNING = "running"
    STOPPED = "stopped"
    REBOOTING = "rebooting"
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    ERROR = "error"
    AWAITING_APPROVAL = "awaiting_approval"  # admitted by quota, held until an admin answers
    DENIED = "denied"  # an admin (or the approval timeout) said no: never launched


class Placement(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    provider: str | None = None
    account: str | None = None
    region: str | None = None


class Lease(BaseModel):
    """How long an instance may live, fixed at launch from its owner's lease policy: at
    ``expires_at`` the scheduler carries out ``on_expiry``, having warned ``warn_seconds``
    before."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    expires_at: datetime
    on_expiry: Literal["stop", "terminate"]
    warn_seconds: int


class ServiceHeartbeat(Event):
    """A service replica says it is alive and connected to the bus; the gateway turns these into
    ``GET /v1/status``, which is how anyone outside reads them."""

    TOPIC = "service.heartbeat"
    AUDIENCE = Audience.INTERNAL
    # 1.0: first version
    # 1.1: added failing (background loops of the replica that are down right now)
    VERSION = "1.1"

    service: str
    replica: str
    started_at: datetime
    sent_at: datetime
    failing: list[str] = Field(default_factory=list)


class InstanceEvent(Event):
    """An event about one instance (not an event itself: no TOPIC). Its id is the CloudEvent
    subject, which instance-ordered handlers keep order by; ``owner`` is who has it then."""

    SUBJECT_FIELD = "instance_id"

    instance_id: uuid.UUID
    owner: str


class LaunchFields(InstanceEvent):
    """What a launch asks for, carried alike by :class:`InstanceLaunchRequested` and
    :class:`InstanceLaunchAdmitted`. Not an event itself (no TOPIC): a change here changes both
    schemas, and each needs its own version bump."""

    name: str
    image: str
    cpus: int
    memory_mb: int
    placement: Placement = Field(default_factory=Placement)
    # None: the instance lives until someone ends it.
    lease: Lease | None = None
    # The admission price: the highest hourly price among the sizes placement could choose on
    # the accounts the launch may go to (None: some catalog or price is not known yet).
    price_per_hour: float | None = None
    # The approval rules that hold the launch until an admin answers (empty: none).
    approval_rules: list[str] = Field(default_factory=list)
    # When an unanswered approval is denied (None: no approval needed).
    approval_deadline: datetime | None = None
    # A member of a deployment: which, and in which group (None: a launch of its own).
    deployment_id: uuid.UUID | None = None
    group: str | None = None
    # No two instances of the group on one account (or region).
    spread: Literal["accounts", "regions"] | None = None


class InstanceLaunchRequested(LaunchFields):
    """The gateway accepted a launch request; quota decides it next."""

    TOPIC = "instance.launch_requested"
    AUDIENCE = Audience.PUBLIC
    # 1.0: first version
    # 1.1: added lease, price_per_hour, approval_rules, approval_deadline
    # 1.2: added deployment_id, group, spread
    VERSION = "1.2"


class InstanceRejected(InstanceEvent):
    """Quota refused a launch; ``reason`` says which limit."""

    TOPIC = "instance.rejected"
    AUDIENCE = Audience.PUBLIC
    # 1.0: first version
    VERSION = "1.0"

    reason: str


class InstancePlaced(InstanceEvent):
    """The scheduler chose an account and the cloud accepted the instance; ``reason`` says why."""

    TOPIC = "instance.placed"
    AUDIENCE = Audience.PUBLIC
    # 1.0: first version
    # 1.1: added cpus, memory_mb (so followers of the instance need not join two topics)
    # 1.2: added price_per_hour (of the size chosen; None: the catalog gives no price)
    VERSION = "1.2"

    account_id: str
    provider: str
    provider_instance_id: str
    region: str | None = None
    reason: str | None = None
    cpus: int | None = None
    memory_mb: int | None = None
    price_per_hour: float | None = None


class InstanceFailed(InstanceEvent):
    """No candidate account could launch the instance; ``attempts`` lists what was tried."""

    TOPIC = "instance.failed"
    AUDIENCE = Audience.PUBLIC
    # 1.0: first version
    VERSION = "1.0"

    reason: str
    attempts: list[str] = Field(default_factory=list)


class InstanceStateChanged(InstanceEvent):
    """An instance moved from one state to another, as the poller (or an action) saw it."""

    TOPIC = "instance.state_changed"
    AUDIENCE = Audience.PUBLIC
    # 1.0: first version
    VERSION = "1.0"

    account_id: str
    provider: str
    provider_instance_id: str | None
    old_state: InstanceState | None
    new_state: InstanceState
    cpus: int
    memory_mb: int
    observed_at: datetime


class InstanceAction(enum.StrEnum):
    STOP = "stop"
    START = "start"
    REBOOT = "reboot"
    TERMINATE = "terminate"


class InstanceActionRequested(InstanceEvent):
    """Its owner (or an admin) asked for an instance to be stopped, started, rebooted or ended."""

    TOPIC = "instance.action_requested"
    AUDIENCE = Audience.INTERNAL
    # 1.0: first version
    VERSION = "1.0"

    action: InstanceAction
    requested_by: str
    account_id: str | None = None
    provider_instance_id: str | None = None


class InstanceOwnerChanged(InstanceEvent):
    """An admin gave an instance to another user (when deleting its owner): from now on its
    events, usage and quota count for ``owner``; ``previous_owner`` is who had it."""

    TOPIC = "instance.owner_changed"
    AUDIENCE = Audience.PUBLIC
    # 1.0: first version
    VERSION = "1.0"

    previous_owner: str
    changed_by: str
    cpus: int
    memory_mb: int


class SealedSecret(BaseModel):
    """A secret sealed by the gateway (AES-256-GCM, see shared/credentials.py): provider
    credentials, a webhook's signing secret or URL. The one model for it, in events, in the
    database and in :class:`shared.credentials.CredentialCipher`."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    key_id: str
    nonce: str  # base64
    ciphertext: str  # base64, tag included


class ProviderAccountChanged(Event):
    """An admin registered or changed a provider account: its whole current state.

    Internal: carries the credentials sealed, never in clear. ``revision`` grows with each change,
    so a consumer keeps the highest it has seen and ignores older ones arriving late.
    """

    TOPIC = "provider_account.changed"
    AUDIENCE = Audience.INTERNAL
    # 1.0: first version
    # 1.1: added deleted (an admin deleted the account: stop polling it, place nothing there)
    VERSION = "1.1"

    account_id: str
    name: str
    provider: str
    config: dict[str, Any]
    grants: list[str]
    credentials: SealedSecret
    revision: int
    deleted: bool = False


class ProviderAccountHealth(Event):
    """How the poller's last polls of an account went. Internal.

    Sent when a poll fails, when polls succeed again, and otherwise at most every
    ``HEALTH_REPORT_SECONDS`` of successful polls; ``last_error`` is redacted.
    """

    TOPIC = "provider_account.health_reported"
    AUDIENCE = Audience.INTERNAL
    # 1.0: first version
    VERSION = "1.0"

    account_id: str
    last_poll_at: datetime | None
    last_error: str | None
    consecutive_failures: int


class InstanceLaunchAdmitted(LaunchFields):
    """Quota reserved room for a launch; the scheduler places it next. Internal."""

    TOPIC = "instance.launch_admitted"
    AUDIENCE = Audience.INTERNAL
    # 1.0: first version
    # 1.1: added lease, price_per_hour, approval_rules, approval_deadline
    # 1.2: added deployment_id, group, spread
    VERSION = "1.2"

    @classmethod
    def of(cls, requested: InstanceLaunchRequested) -> InstanceLaunchAdmitted:
        """The admission of ``requested``: the same launch, field for field."""
        return cls(**{name: getattr(requested, name) for name in LaunchFields.model_fields})


class ResourceUsage(BaseModel):
    """What a user holds. ``cost_this_month``: spent since the month began (UTC) plus what the
    instances they hold will cost until the month's end or their lease's end, whichever is
    first, in the price unit of the account catalogs."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    instances: int | None = None
    cpus: int | None = None
    memory_mb: int | None = None
    cost_this_month: float | None = None


class ResourceLimits(BaseModel):
    """A user's limits; None: unlimited. ``cost_per_month`` is a budget in the price unit of
    the account catalogs."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    instances: int | None = None
    cpus: int | None = None
    memory_mb: int | None = None
    cost_per_month: float | None = None


class QuotaLimitsSet(Event):
    """An admin set a user's limits (null: unlimited). Internal: quota applies them."""

    TOPIC = "quota.limits_set"
    AUDIENCE = Audience.INTERNAL
    # 1.0: first version
    # 1.1: limits gained cost_per_month
    VERSION = "1.1"

    owner: str
    limits: ResourceLimits
    set_by: str


class QuotaUsageChanged(Event):
    """A user's usage moved; ``limits`` are null where unlimited."""

    TOPIC = "quota.usage_changed"
    AUDIENCE = Audience.PUBLIC
    # 1.0: first version
    # 1.1: usage gained cost_this_month, limits cost_per_month
    VERSION = "1.1"

    owner: str
    usage: ResourceUsage
    limits: ResourceLimits


class WebhookSecret(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    sealed: SealedSecret
    # None: signs until replaced. A time: the old secret of a rotation, signing until then.
    expires_at: datetime | None = None


class WebhookChanged(Event):
    """A user registered, re-enabled, rotated or deleted a webhook: its whole current state.

    Internal: carries the signing secrets and the URL (which may hold a token) sealed.
    ``revision`` grows with each change, so the notifier keeps the highest it has seen.
    ``scope`` is ``own`` (events about the owner's resources) or ``all`` (an admin's webhook:
    everyone's events).
    """

    TOPIC = "webhook.changed"
    AUDIENCE = Audience.INTERNAL
    # 1.0: first version
    # 2.0: ``url`` has its query string redacted; the whole URL travels in ``sealed_url``
    VERSION = "2.0"

    webhook_id: uuid.UUID
    owner: str
    scope: Literal["own", "all"]
    url: str  # query string redacted: for logs and people
    sealed_url: SealedSecret  # ``{"url": …}`` sealed like the secrets: what the notifier calls
    topics: list[str]
    secrets: list[WebhookSecret]
    active: bool
    deleted: bool = False
    revision: int


DeliveryOutcome = Literal["delivered", "retrying", "gave_up", "disabled"]


class WebhookDeliveryAttempted(Event):
    """The notifier tried to deliver one event to one webhook. Internal: the delivery log.

    ``outcome``: ``delivered`` (2xx), ``retrying`` (tried again at ``next_attempt_at``),
    ``gave_up`` (still failing after the retry horizon), ``disabled`` (410 Gone).
    """

    TOPIC = "webhook.delivery_attempted"
    AUDIENCE = Audience.INTERNAL
    # 1.0: first version
    VERSION = "1.0"

    webhook_id: uuid.UUID
    owner: str
    message_id: str
    message_topic: str
    attempt: int
    outcome: DeliveryOutcome
    status_code: int | None = None
    error: str | None = None
    duration_ms: int
    attempted_at: datetime
    next_attempt_at: datetime | None = None


class WebhookDisabled(Event):
    """A webhook's endpoint answered 410 Gone: the notifier stopped delivering to it. Internal.

    ``revision`` is the webhook revision that was disabled; ``dropped`` counts the deliveries
    that were still waiting and will not be made.
    """

    TOPIC = "webhook.disabled"
    AUDIENCE = Audience.INTERNAL
    # 1.0: first version
    VERSION = "1.0"

    webhook_id: uuid.UUID
    owner: str
    revision: int
    reason: str
    disabled_at: datetime
    dropped: int


class CatalogSize(BaseModel):
    """One size an account offers; ``price_per_hour`` None: neither the cloud nor the account's
    ``config.prices`` gives one."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    id: str
    cpus: int
    memory_mb: int
    price_per_hour: float | None = None


class ProviderAccountCatalogRead(Event):
    """The scheduler read an account's catalog from its cloud: the sizes (with their prices,
    ``config.prices`` applied) and regions. Internal: the gateway prices launches with it."""

    TOPIC = "provider_account.catalog_read"
    AUDIENCE = Audience.INTERNAL
    # 1.0: first version
    VERSION = "1.0"

    account_id: str
    revision: int  # the account revision the catalog was read under
    sizes: list[CatalogSize]
    regions: list[str] = Field(default_factory=list)
    read_at: datetime


class InstanceApprovalRequested(InstanceEvent):
    """Quota reserved room for a launch that approval rules hold: it waits, in state
    ``awaiting_approval``, until an admin (or an external system) approves or denies it through
    the API, or until ``deadline``, when it is denied."""

    TOPIC = "instance.approval_requested"
    AUDIENCE = Audience.PUBLIC
    # 1.0: first version
    VERSION = "1.0"

    name: str
    image: str
    cpus: int
    memory_mb: int
    placement: Placement = Field(default_factory=Placement)
    price_per_hour: float | None = None
    rules: list[str]
    deadline: datetime | None = None


class InstanceApproved(InstanceEvent):
    """An admin approved a held launch; it goes on to placement."""

    TOPIC = "instance.approved"
    AUDIENCE = Audience.PUBLIC
    # 1.0: first version
    VERSION = "1.0"

    decided_by: str
    comment: str | None = None
    decided_at: datetime


class InstanceDenied(InstanceEvent):
    """A held launch was denied (by an admin, its owner withdrawing it, or the approval
    timeout: ``decided_by`` says which); its reservation is released. ``reason`` is what the
    instance shows."""

    TOPIC = "instance.denied"
    AUDIENCE = Audience.PUBLIC
    # 1.0: first version
    VERSION = "1.0"

    decided_by: str
    comment: str | None = None
    decided_at: datetime
    reason: str


class InstanceLeaseExtended(InstanceEvent):
    """The owner (or an admin) moved an instance's lease to ``expires_at``."""

    TOPIC = "instance.lease_extended"
    AUDIENCE = Audience.PUBLIC
    # 1.0: first version
    VERSION = "1.0"

    expires_at: datetime
    extended_by: str


class InstanceLeaseExpiring(InstanceEvent):
    """An instance's lease ends at ``expires_at`` (``warn_seconds`` from now, or less): then it
    will be stopped or terminated (``on_expiry``) unless the lease is extended."""

    TOPIC = "instance.lease_expiring"
    AUDIENCE = Audience.PUBLIC
    # 1.0: first version
    VERSION = "1.0"

    expires_at: datetime
    on_expiry: Literal["stop", "terminate"]


class InstanceLeaseExpired(InstanceEvent):
    """An instance's lease ended: ``on_expiry`` (stop or terminate) is being carried out."""

    TOPIC = "instance.lease_expired"
    AUDIENCE = Audience.PUBLIC
    # 1.0: first version
    VERSION = "1.0"

    expires_at: datetime
    on_expiry: Literal["stop", "terminate"]


class DeploymentMember(BaseModel):
    """One instance of a deployment, as the gateway made it from the template: what its launch
    asks for and the governance terms it was admitted under."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    instance_id: uuid.UUID
    group: str
    name: str
    image: str
    cpus: int
    memory_mb: int
    placement: Placement = Field(default_factory=Placement)
    spread: Literal["accounts", "regions"] | None = None
    lease: Lease | None = None
    price_per_hour: float | None = None
    approval_rules: list[str] = Field(default_factory=list)


class DeploymentEvent(Event):
    """An event about one deployment (not an event itself: no TOPIC); its id is the subject,
    which deployment-ordered handlers keep order by."""

    SUBJECT_FIELD = "deployment_id"

    deployment_id: uuid.UUID
    owner: str


class DeploymentRequested(DeploymentEvent):
    """A user asked for a deployment: every member it starts with. Internal: quota admits or
    refuses it whole."""

    TOPIC = "deployment.requested"
    AUDIENCE = Audience.INTERNAL
    # 1.0: first version
    VERSION = "1.0"

    name: str
    template: dict[str, Any]  # the template with its parameters substituted
    members: list[DeploymentMember]
    approval_deadline: datetime | None = None


class DeploymentAdmitted(DeploymentEvent):
    """Quota reserved room for every member of a deployment (``held``: members that approval
    rules hold until an admin answers). Internal: the scheduler orchestrates it."""

    TOPIC = "deployment.admitted"
    AUDIENCE = Audience.INTERNAL
    # 1.0: first version
    VERSION = "1.0"

    name: str
    template: dict[str, Any]
    members: list[DeploymentMember]
    held: list[uuid.UUID] = Field(default_factory=list)


class DeploymentRefused(DeploymentEvent):
    """Quota refused a deployment whole; ``reason`` names the group and the limit. Internal."""

    TOPIC = "deployment.refused"
    AUDIENCE = Audience.INTERNAL
    # 1.0: first version
    VERSION = "1.0"

    name: str
    reason: str


class DeploymentScaleRequested(DeploymentEvent):
    """A user asked for ``count`` instances in ``group``; ``added`` are the new members when
    that is more than there are. Internal: quota admits the added ones as one unit."""

    TOPIC = "deployment.scale_requested"
    AUDIENCE = Audience.INTERNAL
    # 1.0: first version
    VERSION = "1.0"

    group: str
    count: int
    added: list[DeploymentMember] = Field(default_factory=list)
    requested_by: str
    approval_deadline: datetime | None = None


class DeploymentScaleAdmitted(DeploymentEvent):
    """Quota admitted a scaling (nothing to reserve when it scales down). Internal."""

    TOPIC = "deployment.scale_admitted"
    AUDIENCE = Audience.INTERNAL
    # 1.0: first version
    VERSION = "1.0"

    group: str
    count: int
    added: list[DeploymentMember] = Field(default_factory=list)
    held: list[uuid.UUID] = Field(default_factory=list)


class DeploymentScaleRefused(DeploymentEvent):
    """Quota refused a scaling up whole; the deployment keeps what it has. Internal."""

    TOPIC = "deployment.scale_refused"
    AUDIENCE = Audience.INTERNAL
    # 1.0: first version
    VERSION = "1.0"

    group: str
    count: int
    added: list[uuid.UUID]
    reason: str


class DeploymentDeleteRequested(DeploymentEvent):
    """A user asked for a deployment to be deleted. Internal: the scheduler ends its members,
    last group first."""

    TOPIC = "deployment.delete_requested"
    AUDIENCE = Audience.INTERNAL
    # 1.0: first version
    VERSION = "1.0"

    requested_by: str


class DeploymentOwnerChanged(DeploymentEvent):
    """An admin gave a leaving user's deployment to another user (``owner``), with its
    instances (each has its own ``instance.owner_changed``). Internal: the scheduler launches
    the deployment's later members, and asks for its actions, in the new owner's name."""

    TOPIC = "deployment.owner_changed"
    AUDIENCE = Audience.INTERNAL
    # 1.0: first version
    VERSION = "1.0"

    previous_owner: str
    changed_by: str


class DeploymentStateChanged(DeploymentEvent):
    """A deployment moved from one state to another, or within one its ``reason`` or
    ``failed`` changed (``old_state`` equals ``new_state``: a second member failed while
    degraded). ``reason`` says why it was rejected, is degraded or failed; ``failed`` names the
    members that failed."""

    TOPIC = "deployment.state_changed"
    AUDIENCE = Audience.PUBLIC
    # 1.0: first version
    VERSION = "1.0"

    name: str
    old_state: str | None
    new_state: str
    reason: str | None = None
    failed: list[uuid.UUID] = Field(default_factory=list)
    observed_at: datetime


CATALOG: tuple[type[Event], ...] = tuple(_REGISTERED)
# The contract's topics for external systems.
PUBLIC: tuple[type[Event], ...] = tuple(cls for cls in CATALOG if cls.AUDIENCE is Audience.PUBLIC)
_PUBLIC_TOPICS: frozenset[str] = frozenset(cls.TOPIC for cls in PUBLIC)


def exchange_of(topic: str) -> str:
    """The exchange ``topic`` travels on."""
    return EXCHANGE if topic in _PUBLIC_TOPICS else INTERNAL_EXCHANGE


_BY_TYPE: dict[str, type[Event]] = {cls.ce_type(): cls for cls in CATALOG}
_TOPICS: frozenset[str] = frozenset(cls.TOPIC for cls in CATALOG)


class Envelope(BaseModel):
    """A CloudEvents 1.0 event in structured mode, as it travels on the bus."""

    model_config = ConfigDict(frozen=True, extra="allow")

    specversion: Literal["1.0"] = "1.0"
    id: str
    source: str
    type: str
    time: datetime
    subject: str | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    dataversion: str
    correlationid: str | None = None
    # CloudEvents Distributed Tracing extension: the W3C trace context the event was made in.
    traceparent: str | None = None
    tracestate: str | None = None
    data: dict[str, Any]

    @classmethod
    def wrap(
        cls,
        event: Event,
        *,
        source: str,
        event_id: str | None = None,
        correlation_id: str | None = None,
        time: datetime | None = None,
        trace: Mapping[str, str] | None = None,
    ) -> Envelope:
        """``trace``: the event's ``traceparent``/``tracestate``; by default a child of the span
        in progress (none outside a trace), see :mod:`shared.tracing`."""
        if trace is None:
            trace = tracing.event_trace(event.TOPIC)
        return cls(
            id=event_id or str(uuid.uuid4()),
            source=source,
            type=event.ce_type(),
            time=time or datetime.now(UTC),
            subject=event.subject(),
            dataversion=event.VERSION,
            correlationid=correlation_id,
            traceparent=trace.get(tracing.TRACEPARENT),
            tracestate=trace.get(tracing.TRACESTATE),
            data=event.model_dump(mode="json"),
        )

    @property
    def topic(self) -> str:
        """The routing key: ``boreas.instance.placed.v1`` → ``instance.placed``."""
        return self.type.removeprefix("boreas.").rsplit(".v", 1)[0]

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class UndecodableEvent(Exception):
    """A message that can never be handled, however often it is delivered: dead-letter it."""


def parse_envelope(body: bytes) -> Envelope:
    try:
        return Envelope.model_validate_json(body)
    except ValidationError as exc:
        raise UndecodableEvent(f"not a Boreas CloudEvent: {_first_error(exc)}") from exc


def decode(envelope: Envelope) -> Event:
    """Turn an envelope into its catalog event; an unknown topic or major version is undecodable."""
    cls = _BY_TYPE.get(envelope.type)
    if cls is None:
        if envelope.topic in _TOPICS:
            raise UndecodableEvent(
                f"unsupported major version of {envelope.topic}: {envelope.type}"
            )
        raise UndecodableEvent(f"unknown event type {envelope.type!r}")
    try:
        return cls.model_validate(envelope.data)
    except ValidationError as exc:
        raise UndecodableEvent(f"invalid {envelope.type} data: {_first_error(exc)}") from exc


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in err["loc"]) or "body"
    return f"{where}: {err['msg']}"
