"""Request and response bodies of the HTTP API (the OpenAPI schema is generated from these)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from typing_extensions import TypeAliasType

# PostgreSQL text cannot hold NUL: free text refuses it here, in the schema, not in the database.
NO_NUL = r"^[^\x00]*$"
Text = Annotated[str, StringConstraints(pattern=NO_NUL, max_length=4096)]
JsonValue = TypeAliasType(
    "JsonValue",
    "Text | int | float | bool | list[JsonValue] | dict[ShortText, JsonValue] | None",
)

Username = Annotated[
    str, StringConstraints(pattern=r"^[a-z][a-z0-9_.-]{1,31}$", strip_whitespace=False)
]
Password = Annotated[str, StringConstraints(min_length=12, max_length=256, pattern=NO_NUL)]
Slug = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{1,31}$")]
# DNS label: what every cloud accepts as an instance name.
InstanceName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
ImageName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=NO_NUL)]
Grantee = Annotated[str, StringConstraints(pattern=r"^(\*|[a-z][a-z0-9_.-]{1,31})$")]

MAX_CPUS = 256
MAX_MEMORY_MB = 4 * 1024 * 1024  # 4 TiB, more than any instance type offered today
# Ten years: longer than any lease anyone means, short enough that every end date is a date.
MAX_LEASE_SECONDS = 10 * 365 * 24 * 3600
LeaseSeconds = Annotated[int, Field(ge=1, le=MAX_LEASE_SECONDS)]


class Strict(BaseModel):
    """Request bodies: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class TokenRequest(Strict):
    username: Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=NO_NUL)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=NO_NUL)]


class TokenIssued(BaseModel):
    token: str
    expires_at: datetime


class NewUser(Strict):
    username: Username
    password: Password
    role: Literal["user", "admin"] = "user"


class UserOut(BaseModel):
    id: uuid.UUID
    username: str
    role: Literal["user", "admin"]


class UserAccount(UserOut):
    """A user as admins see them."""

    disabled: bool
    created_at: datetime


class UserPage(BaseModel):
    items: list[UserAccount]
    next_cursor: str | None


class UserChange(Strict):
    disabled: bool | None = None
    role: Literal["user", "admin"] | None = None
    password: Password | None = None


class NewProviderAccount(Strict):
    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")]
    provider: Slug
    credentials: Annotated[dict[ShortText, Text], Field(min_length=1, max_length=32)]
    config: Annotated[dict[ShortText, JsonValue], Field(max_length=64)] = Field(
        default_factory=dict
    )
    grants: Annotated[list[Grantee], Field(max_length=1000)] = Field(default_factory=list)


class Grants(Strict):
    grants: Annotated[list[Grantee], Field(max_length=1000)]


class ProviderAccountView(BaseModel):
    """An account as a user it is granted to sees it: not who else may use it."""

    id: str
    name: str
    provider: str
    config: dict[str, Any]
    revision: int
    created_at: datetime
    updated_at: datetime


class ProviderAccountOut(ProviderAccountView):
    """An account as an admin sees it."""

    grants: list[str]

    def without_grants(self) -> ProviderAccountView:
        return ProviderAccountView(**self.model_dump(exclude={"grants"}))


class AccountHealth(BaseModel):
    """How the poller's polls of the account go: when it last polled, and the last error while
    polls keep failing."""

    last_poll_at: datetime | None
    last_error: str | None
    consecutive_failures: int


class ProviderAccountDetail(ProviderAccountOut):
    health: AccountHealth


class AccountChange(Strict):
    name: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")] | None = None
    credentials: Annotated[dict[ShortText, Text], Field(min_length=1, max_length=32)] | None = None
    config: Annotated[dict[ShortText, JsonValue], Field(max_length=64)] | None = None
    grants: Annotated[list[Grantee], Field(max_length=1000)] | None = None


class PlacementIn(Strict):
    provider: Slug | None = None
    account: ShortText | None = None
    region: (
        Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")] | None
    ) = None


class LaunchRequest(Strict):
    name: InstanceName
    image: ImageName
    cpus: Annotated[int, Field(ge=1, le=MAX_CPUS)]
    memory_mb: Annotated[int, Field(ge=64, le=MAX_MEMORY_MB)]
    placement: PlacementIn = Field(default_factory=PlacementIn)
    # Shorter than the owner's lease policy's default, not over its maximum (none: the default).
    lease_seconds: LeaseSeconds | None = None


class InstanceOut(BaseModel):
    id: uuid.UUID
    name: str
    owner: str
    state: str
    image: str
    cpus: int
    memory_mb: int
    placement: dict[str, Any]
    account_id: str | None
    provider: str | None
    provider_instance_id: str | None
    region: str | None
    created_at: datetime
    updated_at: datetime
    reason: str | None
    # When the lease ends (None: no lease).
    expires_at: datetime | None = None
    # The hourly price of the size the instance was placed on (None: not placed, or unpriced).
    price_per_hour: float | None = None
    # When a launch held for approval is denied if nobody answers (None: no approval asked).
    approval_deadline: datetime | None = None
    # A member of a deployment: which, and in which group (None: a launch of its own).
    deployment_id: uuid.UUID | None = None
    group: str | None = None


# Short enough that its members' names, <deployment>-<group>-<n>, are DNS labels too.
DeploymentName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([a-z0-9-]{0,22}[a-z0-9])?$")]


class DeploymentRequest(Strict):
    """A deployment: its template (docs/deployment-template.schema.json) and the parameters
    substituted into its string fields (``{{ name }}``)."""

    name: DeploymentName
    template: dict[str, Any]
    parameters: dict[str, Any] = Field(default_factory=dict)


class DeploymentScale(Strict):
    group: Annotated[str, StringConstraints(max_length=64, pattern=NO_NUL)]
    count: Annotated[int, Field(ge=1, le=100)]


class MemberOut(BaseModel):
    id: uuid.UUID
    name: str
    state: str


class GroupOut(BaseModel):
    name: str
    # The instances the group is to have (as last asked, by the template or a scaling).
    count: int
    after: list[str]
    spread: Literal["accounts", "regions"] | None
    # Every instance the group ever had, the first first (ended ones too).
    instances: list[MemberOut]


class DeploymentOut(BaseModel):
    id: uuid.UUID
    name: str
    owner: str
    state: str
    reason: str | None
    # The members that failed (by id).
    failed: list[uuid.UUID]
    on_failure: Literal["rollback", "keep"]
    parameters: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    groups: list[GroupOut]


class DeploymentPage(BaseModel):
    items: list[DeploymentOut]
    next_cursor: str | None


class InstancePage(BaseModel):
    items: list[InstanceOut]
    next_cursor: str | None


class ProviderAccountPage(BaseModel):
    items: list[ProviderAccountOut] | list[ProviderAccountView]
    next_cursor: str | None = None


QuotaLimit = Annotated[int | None, Field(ge=0, le=10**9)]
# Money: in the price unit of the account catalogs (per hour for prices); finite, never negative.
Money = Annotated[float, Field(ge=0, le=10**12, allow_inf_nan=False)]


class QuotaLimits(Strict):
    instances: QuotaLimit
    cpus: QuotaLimit
    memory_mb: QuotaLimit
    # What the owner may spend in a calendar month (UTC), spent and committed; None: no budget.
    cost_per_month: Money | None = None


class Quota(BaseModel):
    limits: dict[str, int | float | None]
    usage: dict[str, int | float | None]


class ApprovalConditions(Strict):
    """What a launch must have for the rule to hold it; the conditions given are ANDed."""

    cpus_over: Annotated[int, Field(ge=0, le=MAX_CPUS)] | None = None
    memory_mb_over: Annotated[int, Field(ge=0, le=MAX_MEMORY_MB)] | None = None
    # The admission price strictly over this; an unknown price matches (held, to be safe).
    cost_per_hour_over: Money | None = None
    # Any account (id or name) the launch may go to is listed.
    accounts: Annotated[list[ShortText], Field(min_length=1, max_length=100)] | None = None
    owners: Annotated[list[Username], Field(min_length=1, max_length=1000)] | None = None

    @model_validator(mode="after")
    def _some_condition(self) -> ApprovalConditions:
        if all(value is None for value in self.model_dump().values()):
            raise ValueError("a rule needs at least one condition")
        return self


class ApprovalRule(Strict):
    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9 _.:-]{0,63}$")]
    when: ApprovalConditions


class ApprovalRules(Strict):
    """Every approval rule, in order; a launch matching any of them waits for an admin."""

    rules: Annotated[list[ApprovalRule], Field(max_length=100)]

    @model_validator(mode="after")
    def _unique_names(self) -> ApprovalRules:
        names = [rule.name for rule in self.rules]
        if len(set(names)) != len(names):
            raise ValueError("rule names must be unique")
        return self


class ApprovalDecision(Strict):
    comment: Annotated[str, StringConstraints(max_length=1000, pattern=NO_NUL)] | None = None


class LeasePolicy(Strict):
    """A user's lease policy: what lease a launch gets (``default_seconds``, None: none unless
    asked), the longest it may ask for or be extended to from now (``max_seconds``, None: no
    maximum), what happens at expiry, and how long before it the owner is warned."""

    default_seconds: LeaseSeconds | None = None
    max_seconds: LeaseSeconds | None = None
    on_expiry: Literal["stop", "terminate"] = "stop"
    warn_seconds: Annotated[int, Field(ge=0, le=MAX_LEASE_SECONDS)] = 300

    @model_validator(mode="after")
    def _default_within_max(self) -> LeasePolicy:
        if (
            self.default_seconds is not None
            and self.max_seconds is not None
            and self.default_seconds > self.max_seconds
        ):
            raise ValueError("default_seconds must not be over max_seconds")
        return self


class LeaseExtension(Strict):
    seconds: LeaseSeconds


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    detail: dict[str, Any]


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next_cursor: str | None


# A topic pattern of a subscription: dot-separated words, `*` one word, `#` any number.
TopicPattern = Annotated[
    str, StringConstraints(max_length=100, pattern=r"^(#|\*|[a-z_]+)(\.(#|\*|[a-z_]+))*$")
]


class NewWebhook(Strict):
    url: Annotated[str, StringConstraints(min_length=1, max_length=2048, pattern=NO_NUL)]
    topics: Annotated[list[TopicPattern], Field(min_length=1, max_length=20)]
    # "own": events about the owner's resources (the only choice for users); "all": everyone's,
    # the default for admins.
    scope: Literal["own", "all"] | None = None


class WebhookOut(BaseModel):
    id: uuid.UUID
    owner: str
    url: str
    topics: list[str]
    scope: Literal["own", "all"]
    state: Literal["active", "disabled"]
    disabled_reason: str | None
    # During a secret rotation: when the previous secret stops signing.
    previous_secret_expires_at: datetime | None
    created_at: datetime
    updated_at: datetime


class WebhookWithSecret(WebhookOut):
    # Shown once: at creation and at each rotation. Boreas keeps it sealed.
    secret: str


class WebhookPage(BaseModel):
    items: list[WebhookOut]
    next_cursor: str | None


class SecretRotation(Strict):
    # How long the previous secret keeps signing beside the new one (0: stops at once).
    previous_secret_valid_seconds: Annotated[int, Field(ge=0, le=7 * 24 * 3600)] = 24 * 3600


class DeliveryAttempt(BaseModel):
    message_id: str
    message_topic: str
    attempt: int
    outcome: Literal["delivered", "retrying", "gave_up", "disabled"]
    status_code: int | None
    error: str | None
    duration_ms: int
    attempted_at: datetime
    next_attempt_at: datetime | None


class DeliveryAttemptPage(BaseModel):
    items: list[DeliveryAttempt]
    next_cursor: str | None
