"""Workflows: Ango Hub's graph of stages, its validation, and the routing of tasks through it.

A workflow is a JSON list of stages, each ``{"id", "type", "name", "next": [stage ids]}``
plus its type's own settings; ``{"stages": [...]}`` is accepted too. :func:`parse` checks
everything at once and raises one :class:`WorkflowError` that lists every problem.
:func:`to_json` gives the JSON back with secrets masked unless asked (or sealed, for the store:
``parse(..., unseal=...)`` opens them); :func:`merge_secrets` lets an admin re-save a workflow
without typing its secrets again. :func:`enter` and
:func:`advance` route a task through the automatic stages to the stage where it waits.

Pure: no I/O, no clock, no randomness (the ``sample`` rule hashes the task and stage ids).

Decisions where Ango's documentation is silent:

- ``next[i]`` is output ``i``: Review accept then reject; Logic one per rule then else;
  a gate Webhook delivered then (optionally) failure.
- No stage may point at Start: it takes tasks from import and requeue only.
- Hold ``releaseBatches``: a release of the whole stage (no task named) takes only tasks in
  one of these batches (:func:`releasable`); a release that names tasks always takes them.
- ``sample`` rules hash ``(taskId, stage id)``: the same task at the same stage always gets
  the same answer (a retried transaction, a replay or a second pass after a reject route it
  the same way), different stages sample independently, and all sample rules of one stage
  share the task's bucket, so ``sample 10`` then ``sample 30`` split 10% / 20%.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import hmac
import math
import ssl
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntEnum, StrEnum
from fractions import Fraction
from types import MappingProxyType
from typing import Final, Literal, TypeAlias, cast
from urllib.parse import urlsplit

__all__ = [
    "DEFAULT_REVIEW_ID",
    "DEFAULT_WEBHOOK_ID",
    "AnnotationRule",
    "AnnotatorRule",
    "Auth",
    "BatchRule",
    "BearerAuth",
    "GateOutput",
    "HoldSettings",
    "LogicSettings",
    "NoAuth",
    "PayloadFormat",
    "ReviewOutput",
    "Route",
    "Rule",
    "SampleRule",
    "Secret",
    "SecretAuth",
    "Settings",
    "SignatureScheme",
    "Stage",
    "StageType",
    "StartSettings",
    "TaskFacts",
    "WebhookMode",
    "WebhookSettings",
    "Workflow",
    "WorkflowError",
    "WorkflowProblem",
    "advance",
    "choose_output",
    "default_workflow",
    "describe_rule",
    "edges",
    "enter",
    "failure_output",
    "is_automatic",
    "is_human",
    "merge_secrets",
    "output_labels",
    "parse",
    "passes_through",
    "releasable",
    "rule_matches",
    "stored_secrets",
    "to_json",
    "waits",
    "webhook_settings",
    "webhook_stages",
]


class StageType(StrEnum):
    START = "Start"
    LABEL = "Label"
    REVIEW = "Review"
    HOLD = "Hold"
    LOGIC = "Logic"
    WEBHOOK = "Webhook"
    COMPLETE = "Complete"
    ARCHIVE = "Archive"


class ReviewOutput(IntEnum):
    """The outputs of a Review stage, as ``advance(..., output=...)`` takes them."""

    ACCEPT = 0
    REJECT = 1


class GateOutput(IntEnum):
    """The outputs of a Webhook stage in gate mode (FAILURE exists only if wired)."""

    DELIVERED = 0
    FAILURE = 1


PayloadFormat: TypeAlias = Literal["ango-2023", "ango-2025"]
SignatureScheme: TypeAlias = Literal["hub-256", "standard"]
WebhookMode: TypeAlias = Literal["pass", "gate"]

_FORMATS: Final = ("ango-2023", "ango-2025")
_SIGNATURES: Final = ("hub-256", "standard")
_MODES: Final = ("pass", "gate")
_TIMEOUT_MS: Final = (100, 15000, 120000)  # min, default, max
_URL_MAX: Final = 2048
CA_BUNDLE_MAX: Final = 256 * 1024
_PEM_CERTIFICATE: Final = "-----BEGIN CERTIFICATE-----"
# Where a Webhook stage keeps write-only values, inside its auth.
_SECRET_FIELDS: Final = ("secret", "token", "previousSecret")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND: Final = timedelta(milliseconds=1)
# Shorter secrets show no tail at all: four characters of an eight-character secret is
# half of it.
_LAST4_MIN_LENGTH: Final = 12
_STANDARD_PREFIX: Final = "whsec_"


def _utf8(text: str) -> bytes:
    # JSON can carry lone surrogates; they must hash, not crash.
    return text.encode("utf-8", "surrogatepass")


class Secret:
    """A write-only value (webhook secret, bearer token): repr and str never show it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    @property
    def last4(self) -> str:
        """Its last four characters, or "" when it is too short to show any of it."""
        return self._value[-4:] if len(self._value) >= _LAST4_MIN_LENGTH else ""

    def __repr__(self) -> str:
        return "Secret('****')"

    def __str__(self) -> str:
        return "****"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(_utf8(self._value), _utf8(other._value))

    def __hash__(self) -> int:
        return hash(self._value)


# -- problems -------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkflowProblem:
    """One thing wrong with a workflow: which stage, which field, and what was expected.

    ``message`` starts with the field (``next has 1 output, Review needs 2 ...``); ``where``
    names the stage (``stage "Review 1" (id r1)``), its position when it has no usable id
    (``stages[3]``), or ``workflow`` for the whole.
    """

    field: str
    message: str
    stage_id: str | None = None
    stage_name: str | None = None
    index: int | None = None

    @property
    def where(self) -> str:
        if self.stage_id is not None:
            return f'stage "{self.stage_name}" (id {self.stage_id})'
        if self.index is not None:
            return f"stages[{self.index}]"
        return "workflow"

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class WorkflowError(ValueError):
    """A workflow is invalid, or a task cannot be routed; ``problems`` lists every reason."""

    def __init__(self, problems: Iterable[WorkflowProblem]) -> None:
        self.problems: tuple[WorkflowProblem, ...] = tuple(problems)
        lines = [str(p) for p in self.problems]
        if len(lines) == 1:
            text = f"invalid workflow: {lines[0]}"
        else:
            text = f"invalid workflow ({len(lines)} problems):\n" + "\n".join(
                f"- {line}" for line in lines
            )
        super().__init__(text)


def _error(stage: Stage | None, field_name: str, message: str) -> WorkflowError:
    if stage is None:
        return WorkflowError([WorkflowProblem(field_name, message)])
    return WorkflowError([WorkflowProblem(field_name, message, stage.id, stage.name)])


# -- the model ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartSettings:
    auto_forward: bool = True


@dataclass(frozen=True)
class HoldSettings:
    release_batches: tuple[str, ...] | None = None


@dataclass(frozen=True)
class AnnotationRule:
    """A tool or classification (any depth) with this schemaId is present (or absent)."""

    schema_id: str
    present: bool = True


@dataclass(frozen=True)
class AnnotatorRule:
    """The last submitter is one of these emails (compared without case)."""

    emails: tuple[str, ...]


@dataclass(frozen=True)
class SampleRule:
    """This share of tasks, in percent, chosen by a stable hash of task and stage ids."""

    percent: float


@dataclass(frozen=True)
class BatchRule:
    """The task is in one of these batches (by name)."""

    batches: tuple[str, ...]


Rule: TypeAlias = AnnotationRule | AnnotatorRule | SampleRule | BatchRule


@dataclass(frozen=True)
class LogicSettings:
    rules: tuple[Rule, ...]


@dataclass(frozen=True)
class NoAuth:
    pass


@dataclass(frozen=True)
class SecretAuth:
    """Sign with the secret: ``X-Hub-Signature`` (HMAC-SHA1), plus ``signatures``.

    During a rotation ``previous`` (the old secret) stays in use until ``previous_until``
    (epoch seconds): Standard Webhooks then carries a signature with each, so receivers can
    switch at any moment of the overlap; the hub headers, which hold one value, sign with
    the newest.
    """

    secret: Secret
    previous: Secret | None = None
    previous_until: float | None = None

    def secrets_at(self, now: float) -> tuple[Secret, ...]:
        """The secrets to sign with at ``now``, newest first."""
        until = self.previous_until
        if self.previous is not None and until is not None and now < until:
            return (self.secret, self.previous)
        return (self.secret,)


@dataclass(frozen=True)
class BearerAuth:
    token: Secret


Auth: TypeAlias = NoAuth | SecretAuth | BearerAuth


@dataclass(frozen=True)
class WebhookSettings:
    url: str
    auth: Auth = NoAuth()
    format: PayloadFormat = "ango-2023"
    signatures: tuple[SignatureScheme, ...] = ()
    timeout_ms: int = _TIMEOUT_MS[1]
    mode: WebhookMode = "pass"
    # PEM CA certificates that alone are trusted for this URL's TLS (None: the system's).
    ca_bundle: str | None = None


Settings: TypeAlias = StartSettings | HoldSettings | LogicSettings | WebhookSettings | None


@dataclass(frozen=True)
class Stage:
    """One stage; ``next[i]`` is the stage id output ``i`` leads to.

    ``settings`` is StartSettings, HoldSettings, LogicSettings or WebhookSettings for those
    types, None for the others; ``extra`` keeps keys we do not interpret (positions, colours)
    so they survive a round trip.
    """

    id: str
    type: StageType
    name: str
    next: tuple[str, ...] = ()
    settings: Settings = None
    extra: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}), hash=False)


@dataclass(frozen=True)
class Workflow:
    """A validated workflow: ``stages`` by id, in the order given; ``start`` its Start id."""

    stages: Mapping[str, Stage] = field(hash=False)
    start: str


@dataclass(frozen=True)
class TaskFacts:
    """What routing may look at: the task, its annotations' schemaIds, submitter, batches."""

    task_id: str
    schema_ids: frozenset[str] = frozenset()
    annotator: str | None = None
    batches: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Route:
    """Where a task goes: every stage id entered, in order; it rests in the last."""

    entered: tuple[str, ...]

    @property
    def final(self) -> str:
        return self.entered[-1]


# -- what a stage does with a task ------------------------------------------------------------


def webhook_settings(flow: Workflow, stage_id: str) -> WebhookSettings | None:
    """How ``stage_id`` sends, if it is one of ``flow``'s Webhook stages (else None)."""
    stage = flow.stages.get(stage_id)
    settings = None if stage is None else stage.settings
    return settings if isinstance(settings, WebhookSettings) else None


def _mode(stage: Stage) -> WebhookMode:
    settings = stage.settings
    return settings.mode if isinstance(settings, WebhookSettings) else "pass"


def is_human(stage: Stage) -> bool:
    """A person moves the task on: Label, Review, Hold, and a Start that does not forward."""
    if stage.type is StageType.START:
        return not _automatic(stage.type, stage.settings)
    return stage.type in (StageType.LABEL, StageType.REVIEW, StageType.HOLD)


def is_automatic(stage: Stage) -> bool:
    """The stage moves the task on by itself: a forwarding Start, Logic, Webhook (any mode).

    A loop made only of these would spin a task forever, so validation forbids one.
    """
    return _automatic(stage.type, stage.settings)


def _automatic(stage_type: StageType, settings: Settings) -> bool:
    if stage_type is StageType.START:
        return not isinstance(settings, StartSettings) or settings.auto_forward
    return stage_type in (StageType.LOGIC, StageType.WEBHOOK)


def passes_through(stage: Stage) -> bool:
    """A task entering the stage leaves it at once: forwarding Start, Logic, pass Webhook."""
    if stage.type is StageType.WEBHOOK:
        return _mode(stage) == "pass"
    return is_automatic(stage)


def waits(stage: Stage) -> bool:
    """A task entering the stage stays: for a person, a gate delivery, or for good."""
    return not passes_through(stage)


def failure_output(stage: Stage) -> int | None:
    """The output a gate Webhook takes when delivery is given up, if it has one wired."""
    if stage.type is StageType.WEBHOOK and _mode(stage) == "gate" and len(stage.next) > 1:
        return GateOutput.FAILURE
    return None


def releasable(stage: Stage, facts: TaskFacts) -> bool:
    """Whether releasing the whole Hold stage (no task named) releases this task."""
    settings = stage.settings
    if not isinstance(settings, HoldSettings) or settings.release_batches is None:
        return True
    return not facts.batches.isdisjoint(settings.release_batches)


def webhook_stages(workflow: Workflow) -> tuple[Stage, ...]:
    return tuple(s for s in workflow.stages.values() if s.type is StageType.WEBHOOK)


# -- routing --------------------------------------------------------------------------------


def _in_sample(task_id: str, stage_id: str, percent: float) -> bool:
    if not math.isfinite(percent):
        return False
    digest = hashlib.sha256(_utf8(task_id) + b"\x00" + _utf8(stage_id)).digest()
    bucket = int.from_bytes(digest[:8], "big")  # uniform in [0, 2**64)
    # Exact arithmetic: 100% must take every bucket, float rounding could miss the top one.
    return bucket * 100 < Fraction(percent) * 2**64


def rule_matches(rule: Rule, facts: TaskFacts, stage_id: str) -> bool:
    """Whether ``rule`` of the Logic stage ``stage_id`` holds for the task."""
    if isinstance(rule, AnnotationRule):
        return (rule.schema_id in facts.schema_ids) == rule.present
    if isinstance(rule, AnnotatorRule):
        who = facts.annotator
        return who is not None and who.casefold() in {e.casefold() for e in rule.emails}
    if isinstance(rule, SampleRule):
        return _in_sample(facts.task_id, stage_id, rule.percent)
    return not facts.batches.isdisjoint(rule.batches)


def choose_output(stage: Stage, facts: TaskFacts) -> int:
    """The output a task leaves an automatic stage by: for Logic the first rule that holds,
    else the last output; 0 for every other stage."""
    settings = stage.settings
    if not isinstance(settings, LogicSettings):
        return 0
    for i, rule in enumerate(settings.rules):
        if rule_matches(rule, facts, stage.id):
            return i
    return len(settings.rules)


def _stage(workflow: Workflow, stage_id: str) -> Stage:
    stage = workflow.stages.get(stage_id)
    if stage is None:
        raise _error(None, "stages", f"stages has no stage with id {stage_id!r}")
    return stage


def _target(workflow: Workflow, stage: Stage, output: int) -> Stage:
    if not 0 <= output < len(stage.next):
        count = len(stage.next)
        raise _error(stage, "next", f"next has no output {output} ({count} wired)")
    return _stage(workflow, stage.next[output])


def enter(workflow: Workflow, stage_id: str, facts: TaskFacts) -> Route:
    """The task is put into ``stage_id`` (import at Start, requeue, release target).

    It passes through automatic stages until one where it waits; raises WorkflowError for an
    unknown stage or a loop (which validation forbids: this guards hand-built workflows).
    """
    stage = _stage(workflow, stage_id)
    entered = [stage]
    passed: set[str] = set()
    while passes_through(stage):
        if stage.id in passed:
            # Facts do not change on the way, so a second visit would repeat forever.
            loop = " -> ".join(s.name for s in entered)
            raise _error(stage, "next", f"next loops through automatic stages ({loop})")
        passed.add(stage.id)
        stage = _target(workflow, stage, choose_output(stage, facts))
        entered.append(stage)
    return Route(tuple(s.id for s in entered))


def advance(workflow: Workflow, stage_id: str, facts: TaskFacts, *, output: int = 0) -> Route:
    """The task leaves ``stage_id`` through ``output`` (see ReviewOutput, GateOutput)."""
    return enter(workflow, _target(workflow, _stage(workflow, stage_id), output).id, facts)


# -- drawing --------------------------------------------------------------------------------


def _listing(values: Sequence[str]) -> str:
    return " or ".join(values)


def describe_rule(rule: Rule) -> str:
    """A short label for a rule, for drawing the graph."""
    if isinstance(rule, AnnotationRule):
        return f"{rule.schema_id} {'present' if rule.present else 'absent'}"
    if isinstance(rule, AnnotatorRule):
        return f"annotator is {_listing(rule.emails)}"
    if isinstance(rule, SampleRule):
        return f"sample {rule.percent:g}%"
    return f"batch is {_listing(rule.batches)}"


def output_labels(stage: Stage) -> tuple[str, ...]:
    """One label per wired output: accept/reject, rule descriptions/else, delivered/failure."""
    settings = stage.settings
    labels: tuple[str, ...] = ()
    if stage.type is StageType.REVIEW:
        labels = ("accept", "reject")
    elif isinstance(settings, LogicSettings):
        labels = (*(describe_rule(r) for r in settings.rules), "else")
    elif stage.type is StageType.WEBHOOK and _mode(stage) == "gate":
        labels = ("delivered", "failure")
    count = len(stage.next)
    return (labels + ("",) * count)[:count]


def edges(workflow: Workflow) -> list[tuple[str, str, str]]:
    """Every wire as (from id, to id, label), for drawing the graph."""
    return [
        (stage.id, target, label)
        for stage in workflow.stages.values()
        for target, label in zip(stage.next, output_labels(stage), strict=True)
    ]


# -- parsing --------------------------------------------------------------------------------

_COMMON_KEYS: Final = frozenset({"id", "type", "name", "next"})
_SETTING_KEYS: Final[Mapping[StageType, frozenset[str]]] = {
    StageType.START: frozenset({"autoForward"}),
    StageType.HOLD: frozenset({"releaseBatches"}),
    StageType.LOGIC: frozenset({"rules"}),
    # "secret" and "token" are refused beside auth, and kept out of `extra` so that
    # to_json never echoes them.
    StageType.WEBHOOK: frozenset(
        {"url", "auth", "format", "signatures", "timeoutMs", "mode", "caBundle", "secret", "token"}
    ),
}
_TYPE_NAMES: Final = frozenset(t.value for t in StageType)
_TYPES: Final = ", ".join(t.value for t in StageType)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass
class _Where:
    """Collects problems for one stage (or the workflow), naming it the same way each time."""

    problems: list[WorkflowProblem]
    stage_id: str | None = None
    stage_name: str | None = None
    index: int | None = None

    def bad(self, field_name: str, text: str) -> None:
        message = f"{field_name} {text}" if field_name else text
        self.problems.append(
            WorkflowProblem(field_name, message, self.stage_id, self.stage_name, self.index)
        )


@dataclass
class _Draft:
    """A stage as far as it parsed: graph checks run even when its settings are wrong."""

    where: _Where
    index: int
    id: str | None
    type: StageType | None
    name: str
    next: tuple[str, ...]
    settings: Settings
    extra: dict[str, object]

    def automatic(self) -> bool:
        return self.type is not None and _automatic(self.type, self.settings)


def parse(
    data: object,
    *,
    schema_ids: Collection[str] | None = None,
    unseal: Callable[[str], str] | None = None,
) -> Workflow:
    """A validated Workflow from its JSON, or WorkflowError listing every problem.

    With ``schema_ids`` (the category schema's), annotation rules must name one of them.
    ``unseal`` opens secrets stored sealed (``{"sealed": ...}``, see ``to_json``); it raises
    ValueError for one it cannot open, which is then reported as a problem. Without it a
    sealed secret is a problem: input from outside can never have one opened.
    Any input, however malformed, gives a Workflow or a WorkflowError, never another error.
    """
    if unseal is not None:
        data = _map_secrets(data, lambda value: _opened(value, unseal))
    problems: list[WorkflowProblem] = []
    drafts = [
        draft
        for index, raw in enumerate(_stage_list(data, problems))
        if (draft := _parse_stage(index, raw, problems, schema_ids)) is not None
    ]
    _check_graph(drafts, _Where(problems))
    if problems:
        raise WorkflowError(problems)
    stages = {d.id: _build(d) for d in drafts if d.id is not None}
    start = next(s.id for s in stages.values() if s.type is StageType.START)
    return Workflow(MappingProxyType(stages), start)


def _build(draft: _Draft) -> Stage:
    # Only called when no problem was found, so both parsed.
    assert draft.id is not None
    assert draft.type is not None
    extra = MappingProxyType(draft.extra)
    return Stage(draft.id, draft.type, draft.name, draft.next, draft.settings, extra)


def _stage_list(data: object, problems: list[WorkflowProblem]) -> list[object]:
    if isinstance(data, dict) and "stages" in data:
        data = data["stages"]
    if isinstance(data, list):
        return data
    problems.append(
        WorkflowProblem("stages", 'stages expected: a list of stages, or {"stages": [...]}')
    )
    return []


def _parse_stage(
    index: int,
    raw: object,
    problems: list[WorkflowProblem],
    schema_ids: Collection[str] | None,
) -> _Draft | None:
    where = _Where(problems, index=index)
    if not isinstance(raw, dict):
        where.bad("", "expected a stage object {id, type, name, next}")
        return None
    stage_id = raw.get("id")
    if isinstance(stage_id, str) and stage_id:
        where.stage_id, where.stage_name, where.index = stage_id, _display(raw, stage_id), None
    else:
        where.bad("id", "must be a non-empty string")
        stage_id = None
    stage_type = _stage_type(raw, where)
    name = _name(raw, stage_type, stage_id, where)
    next_ids = _next(raw, where)
    settings = _SETTINGS[stage_type](raw, where, schema_ids) if stage_type else None
    if stage_type is not None:
        _check_outputs(stage_type, raw, settings, len(next_ids), where)
    known = _COMMON_KEYS | _SETTING_KEYS.get(stage_type or StageType.LABEL, frozenset())
    extra = {k: copy.deepcopy(v) for k, v in raw.items() if isinstance(k, str) and k not in known}
    return _Draft(where, index, stage_id, stage_type, name, next_ids, settings, extra)


def _display(raw: Mapping[object, object], stage_id: str) -> str:
    for key in ("name", "type"):
        value = raw.get(key)
        if isinstance(value, str) and value:
            return value
    return stage_id


def _stage_type(raw: Mapping[object, object], where: _Where) -> StageType | None:
    value = raw.get("type")
    if isinstance(value, str) and value in _TYPE_NAMES:
        return StageType(value)
    where.bad("type", f"type must be one of {_TYPES}; got {_short(value)}")
    return None


def _name(
    raw: Mapping[object, object],
    stage_type: StageType | None,
    stage_id: str | None,
    where: _Where,
) -> str:
    value = raw.get("name")
    if isinstance(value, str) and value:
        return value
    if value is not None:
        where.bad("name", "name must be a non-empty string (or left out)")
    return stage_type.value if stage_type else stage_id or ""


def _next(raw: Mapping[object, object], where: _Where) -> tuple[str, ...]:
    value = raw.get("next", [])
    if not isinstance(value, list):
        where.bad("next", "next must be a list of stage ids")
        return ()
    found: list[str] = []
    for i, target in enumerate(value):
        if isinstance(target, str) and target:
            found.append(target)
        else:
            where.bad(f"next[{i}]", "must be a stage id (a non-empty string)")
    return tuple(found)


_FIXED_OUTPUTS: Final[Mapping[StageType, tuple[int, str]]] = {
    StageType.START: (1, "Start needs 1"),
    StageType.LABEL: (1, "Label needs 1"),
    StageType.HOLD: (1, "Hold needs 1"),
    StageType.REVIEW: (2, "Review needs 2 (accept, reject)"),
    StageType.COMPLETE: (0, "Complete needs none (it is the end)"),
    StageType.ARCHIVE: (0, "Archive needs none (it is the end)"),
}


def _check_outputs(
    stage_type: StageType,
    raw: Mapping[object, object],
    settings: Settings,
    count: int,
    where: _Where,
) -> None:
    allowed: Collection[int]
    if stage_type is StageType.LOGIC:
        rules = raw.get("rules")
        if not isinstance(rules, list):
            return  # already reported; any count would be a guess
        need = len(rules) + 1
        allowed, text = (need,), f"Logic with {len(rules)} rules needs {need} (one per rule, else)"
    elif stage_type is StageType.WEBHOOK:
        if isinstance(settings, WebhookSettings) and settings.mode == "gate":
            allowed, text = (1, 2), "Webhook in gate mode needs 1 or 2 (delivered, failure)"
        else:
            allowed, text = (1,), "Webhook in pass mode needs 1"
    else:
        need, text = _FIXED_OUTPUTS[stage_type]
        allowed = (need,)
    if count not in allowed:
        where.bad("next", f"has {count} output{'' if count == 1 else 's'}, {text}")


# -- settings -------------------------------------------------------------------------------

_SettingsParser: TypeAlias = Callable[
    [Mapping[object, object], _Where, Collection[str] | None], Settings
]


def _no_settings(
    raw: Mapping[object, object], where: _Where, schema_ids: Collection[str] | None
) -> Settings:
    return None


def _start_settings(
    raw: Mapping[object, object], where: _Where, schema_ids: Collection[str] | None
) -> Settings:
    value = raw.get("autoForward", True)
    if not isinstance(value, bool):
        where.bad("autoForward", "must be true (move on at import) or false (wait for a person)")
        return StartSettings()
    return StartSettings(auto_forward=value)


def _hold_settings(
    raw: Mapping[object, object], where: _Where, schema_ids: Collection[str] | None
) -> Settings:
    value = raw.get("releaseBatches")
    if value is None:
        return HoldSettings()
    what = "batch names (leave it out to release every task)"
    return HoldSettings(release_batches=_strings(value, "releaseBatches", what, where))


def _strings(value: object, field_name: str, what: str, where: _Where) -> tuple[str, ...]:
    """A non-empty list of non-empty strings, each problem reported."""
    if not isinstance(value, list) or not value:
        where.bad(field_name, f"must be a non-empty list of {what}")
        return ()
    found: list[str] = []
    for i, item in enumerate(value):
        if isinstance(item, str) and item:
            found.append(item)
        else:
            where.bad(f"{field_name}[{i}]", "must be a non-empty string")
    return tuple(found)


def _logic_settings(
    raw: Mapping[object, object], where: _Where, schema_ids: Collection[str] | None
) -> Settings:
    value = raw.get("rules")
    if not isinstance(value, list) or not value:
        where.bad("rules", "must be a non-empty list of rules (kind: annotation, annotator, ...)")
        return LogicSettings(())
    rules = [
        rule
        for i, item in enumerate(value)
        if (rule := _rule(item, f"rules[{i}]", where, schema_ids)) is not None
    ]
    return LogicSettings(tuple(rules))


def _rule(raw: object, path: str, where: _Where, schema_ids: Collection[str] | None) -> Rule | None:
    kind = raw.get("kind") if isinstance(raw, dict) else None
    parser = _RULES.get(kind) if isinstance(kind, str) else None
    if not isinstance(raw, dict) or parser is None:
        where.bad(f"{path}.kind", f"must be one of {', '.join(_RULES)}")
        return None
    return parser(raw, path, where, schema_ids)


def _annotation_rule(
    raw: Mapping[object, object], path: str, where: _Where, schema_ids: Collection[str] | None
) -> Rule | None:
    schema_id, present = raw.get("schemaId"), raw.get("present", True)
    if not isinstance(present, bool):
        where.bad(f"{path}.present", "must be true or false")
    if not isinstance(schema_id, str) or not schema_id:
        where.bad(f"{path}.schemaId", "must be the schemaId of a tool or classification")
        return None
    if schema_ids is not None and schema_id not in schema_ids:
        where.bad(f"{path}.schemaId", f"{_short(schema_id)} is not in the category schema")
    return AnnotationRule(schema_id, present) if isinstance(present, bool) else None


def _annotator_rule(
    raw: Mapping[object, object], path: str, where: _Where, schema_ids: Collection[str] | None
) -> Rule | None:
    emails = _strings(raw.get("emails"), f"{path}.emails", "email addresses", where)
    for i, email in enumerate(emails):
        if "@" not in email:
            where.bad(f"{path}.emails[{i}]", f"{_short(email)} is not an email address")
    return AnnotatorRule(emails)


def _sample_rule(
    raw: Mapping[object, object], path: str, where: _Where, schema_ids: Collection[str] | None
) -> Rule | None:
    percent = raw.get("percent")
    if _is_number(percent) and 0 <= cast(float, percent) <= 100:
        return SampleRule(cast(float, percent))
    where.bad(f"{path}.percent", "must be a number from 0 to 100")
    return None


def _batch_rule(
    raw: Mapping[object, object], path: str, where: _Where, schema_ids: Collection[str] | None
) -> Rule | None:
    return BatchRule(_strings(raw.get("batches"), f"{path}.batches", "batch names", where))


_RuleParser: TypeAlias = Callable[
    [Mapping[object, object], str, _Where, Collection[str] | None], Rule | None
]
_RULES: Final[Mapping[str, _RuleParser]] = {
    "annotation": _annotation_rule,
    "annotator": _annotator_rule,
    "sample": _sample_rule,
    "batch": _batch_rule,
}


def _is_number(value: object) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _webhook_settings(
    raw: Mapping[object, object], where: _Where, schema_ids: Collection[str] | None
) -> Settings:
    for key in ("secret", "token"):
        if key in raw:
            where.bad(key, 'belongs in auth: {"type": "secret", "secret": ...} or bearer token')
    auth = _auth(raw.get("auth"), where)
    return WebhookSettings(
        url=_url(raw.get("url"), where),
        auth=auth,
        format=cast(PayloadFormat, _choice(raw, "format", _FORMATS, where)),
        signatures=_signatures(raw.get("signatures", []), auth, where),
        timeout_ms=_timeout(raw.get("timeoutMs", _TIMEOUT_MS[1]), where),
        mode=cast(WebhookMode, _choice(raw, "mode", _MODES, where)),
        ca_bundle=_ca_bundle(raw.get("caBundle"), where),
    )


def _ca_bundle(value: object, where: _Where) -> str | None:
    if value is None:
        return None
    expected = "PEM CA certificates (-----BEGIN CERTIFICATE----- ...)"
    if not isinstance(value, str) or _PEM_CERTIFICATE not in value:
        where.bad("caBundle", f"must be {expected}")
        return None
    if len(value) > CA_BUNDLE_MAX:
        where.bad("caBundle", f"is longer than the limit of {CA_BUNDLE_MAX} characters")
        return None
    try:
        ssl.create_default_context(cadata=value)
    except (ssl.SSLError, ValueError):
        where.bad("caBundle", f"holds no certificate that can be read: expected {expected}")
        return None
    return value


def _choice(raw: Mapping[object, object], key: str, choices: Sequence[str], where: _Where) -> str:
    """One of ``choices``; the first is the default."""
    value = raw.get(key, choices[0])
    if isinstance(value, str) and value in choices:
        return value
    where.bad(key, f"must be one of {', '.join(choices)}; got {_short(value)}")
    return choices[0]


def _url(value: object, where: _Where) -> str:
    """An http(s) URL. Never echoed in a problem: it may carry a token in its query."""
    if not isinstance(value, str) or not value:
        where.bad("url", "is required: an http or https URL")
        return ""
    for problem in _url_problems(value):
        where.bad("url", problem)
    return value


def _url_problems(url: str) -> list[str]:
    if len(url) > _URL_MAX:
        return [f"is longer than {_URL_MAX} characters"]
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return ["must not contain spaces or control characters"]
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a bad port
    except ValueError:
        return ["is not a valid URL (check the host and port)"]
    checks = (
        (parts.scheme in ("http", "https"), "must start with http:// or https://"),
        (bool(parts.hostname), "must name a host"),
        (
            parts.username is None and parts.password is None,
            "must not contain credentials (user:password@): use auth instead",
        ),
    )
    return [text for ok, text in checks if not ok]


_AUTH_SHAPES: Final = (
    '{"type": "none"}, {"type": "secret", "secret": ...} or {"type": "bearer", "token": ...}'
)


def _auth(value: object, where: _Where) -> Auth:
    if value is None:
        return NoAuth()
    kind = value.get("type") if isinstance(value, dict) else None
    if not isinstance(value, dict) or kind not in ("none", "secret", "bearer"):
        where.bad("auth", f"must be one of {_AUTH_SHAPES}")
        return NoAuth()
    if kind == "secret":
        # A bad secret still counts as auth secret, so signatures are not reported too.
        secret = Secret(_secret_text(value.get("secret"), "auth.secret", where) or "")
        return _rotation(value, secret, where)
    if kind == "bearer":
        token = _secret_text(value.get("token"), "auth.token", where)
        if token and not all(0x21 <= ord(c) <= 0x7E for c in token):
            where.bad("auth.token", "must be visible ASCII without spaces (it goes in a header)")
        return BearerAuth(Secret(token or ""))
    return NoAuth()


def _rotation(value: Mapping[object, object], secret: Secret, where: _Where) -> SecretAuth:
    """``previousSecret`` and ``previousUntil``: both or neither."""
    raw_previous, raw_until = value.get("previousSecret"), value.get("previousUntil")
    if raw_previous is None and raw_until is None:
        return SecretAuth(secret)
    previous = _secret_text(raw_previous, "auth.previousSecret", where)
    until = _moment(raw_until, "auth.previousUntil", where)
    if previous is not None and previous == secret.reveal():
        where.bad("auth.previousSecret", "is the same as auth.secret: give the old secret")
    if previous is None or until is None:
        return SecretAuth(secret)
    return SecretAuth(secret, Secret(previous), until)


def _moment(value: object, field_name: str, where: _Where) -> float | None:
    """Epoch seconds from an ISO-8601 time (UTC when it names no zone)."""
    expected = "must be an ISO-8601 time such as 2025-01-31T12:00:00Z: the end of the overlap"
    if not isinstance(value, str):
        where.bad(field_name, expected)
        return None
    try:
        moment = datetime.fromisoformat(value)
        if moment.utcoffset() is None:
            moment = moment.replace(tzinfo=UTC)
        # In UTC still a date Python can write (years 1 to 9999); counted exactly, in whole
        # milliseconds as to_json writes it back.
        return ((moment.astimezone(UTC) - _EPOCH) // _MILLISECOND) / 1000
    except (ValueError, OverflowError):
        where.bad(field_name, expected)
        return None


def _secret_text(value: object, field_name: str, where: _Where) -> str | None:
    """The secret's text, or None with a problem that never repeats the value."""
    if value is None or _is_mask(value):
        where.bad(field_name, "is write-only and was not given: type it (again)")
        return None
    if _is_sealed(value):
        where.bad(
            field_name,
            "is sealed (encrypted at rest) and cannot be opened here: the server needs the"
            " secret key it was sealed with (HOOKSTAGE_SECRET_KEY)",
        )
        return None
    if not isinstance(value, str) or not value:
        where.bad(field_name, "must be a non-empty string")
        return None
    if value != value.strip():
        where.bad(field_name, "must not start or end with whitespace")
        return None
    try:
        _utf8(value).decode("utf-8")
    except UnicodeDecodeError:
        where.bad(field_name, "is not valid text (cannot be encoded as UTF-8)")
        return None
    return value


def _is_sealed(value: object) -> bool:
    return isinstance(value, dict) and isinstance(value.get("sealed"), str)


def _sealed(value: object, seal: Callable[[str], str]) -> object:
    return {"sealed": seal(value)} if isinstance(value, str) else value


def _opened(value: object, unseal: Callable[[str], str]) -> object:
    if not isinstance(value, dict) or not _is_sealed(value):
        return value
    try:
        return unseal(value["sealed"])
    except ValueError:
        return value  # left sealed: _secret_text reports it


def _map_secrets(data: object, change: Callable[[object], object]) -> object:
    """Workflow JSON with each Webhook stage's write-only values replaced by ``change(value)``;
    anything malformed is left as it is, for ``parse`` to report."""
    stages = data.get("stages") if isinstance(data, dict) else data
    if not isinstance(stages, list):
        return data
    changed: list[object] = []
    for raw in stages:
        auth = raw.get("auth") if isinstance(raw, dict) else None
        if isinstance(raw, dict) and isinstance(auth, dict):
            fields = {key: change(auth[key]) for key in _SECRET_FIELDS if key in auth}
            changed.append({**raw, "auth": {**auth, **fields}})
        else:
            changed.append(raw)
    return {**data, "stages": changed} if isinstance(data, dict) else changed


def stored_secrets(data: object) -> list[object]:
    """The write-only values of stored workflow JSON as stored: text, or ``{"sealed": ...}``."""
    found: list[object] = []

    def keep(value: object) -> object:
        found.append(value)
        return value

    _map_secrets(data, keep)
    return found


def _is_mask(value: object) -> bool:
    """The placeholder to_json shows instead of a secret."""
    return isinstance(value, dict) and value.get("set") is True


def _signatures(value: object, auth: Auth, where: _Where) -> tuple[SignatureScheme, ...]:
    choices = ", ".join(_SIGNATURES)
    if not isinstance(value, list):
        where.bad("signatures", f"must be a list of extra schemes from {choices}")
        return ()
    found: list[SignatureScheme] = []
    for i, item in enumerate(value):
        if not isinstance(item, str) or item not in _SIGNATURES:
            where.bad(f"signatures[{i}]", f"must be one of {choices}; got {_short(item)}")
        elif item in found:
            where.bad(f"signatures[{i}]", f"lists {item} twice")
        else:
            found.append(cast(SignatureScheme, item))
    if found and not isinstance(auth, SecretAuth):
        where.bad("signatures", 'sign with the secret: they need auth {"type": "secret"}')
    if "standard" in found and isinstance(auth, SecretAuth):
        _check_standard_secret(auth.secret, "auth.secret", where)
        if auth.previous is not None:
            _check_standard_secret(auth.previous, "auth.previousSecret", where)
    return tuple(found)


def _check_standard_secret(secret: Secret, field_name: str, where: _Where) -> None:
    # The same test the sender applies, so a saved workflow never fails at send time.
    if not secret.reveal():
        return  # already reported
    text = secret.reveal().removeprefix(_STANDARD_PREFIX).rstrip("=")
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if not key:
        where.bad(field_name, "is not a Standard Webhooks secret ('whsec_' then base64)")


def _timeout(value: object, where: _Where) -> int:
    low, default, high = _TIMEOUT_MS
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        where.bad("timeoutMs", f"must be a whole number of milliseconds from {low} to {high}")
        return default
    return value


_SETTINGS: Final[Mapping[StageType, _SettingsParser]] = {
    StageType.START: _start_settings,
    StageType.LABEL: _no_settings,
    StageType.REVIEW: _no_settings,
    StageType.HOLD: _hold_settings,
    StageType.LOGIC: _logic_settings,
    StageType.WEBHOOK: _webhook_settings,
    StageType.COMPLETE: _no_settings,
    StageType.ARCHIVE: _no_settings,
}


# -- graph checks ---------------------------------------------------------------------------


def _check_graph(drafts: Sequence[_Draft], workflow: _Where) -> None:
    by_id = _unique(drafts)
    for draft in drafts:
        _check_targets(draft, by_id)
    starts = [d for d in drafts if d.type is StageType.START]
    if len(starts) != 1:
        named = "".join(f" {d.name!r}" for d in starts)
        workflow.bad("stages", f"need exactly one Start stage, found {len(starts)}{named}")
    if starts and starts[0].id is not None:
        _check_reachable(by_id, starts[0].id)
    _check_loops(by_id)


def _unique(drafts: Sequence[_Draft]) -> dict[str, _Draft]:
    by_id: dict[str, _Draft] = {}
    for draft in drafts:
        if draft.id is None:
            continue
        first = by_id.setdefault(draft.id, draft)
        if first is not draft:
            draft.where.bad("id", f"is also the id of stages[{first.index}]: ids must be unique")
    return by_id


def _check_targets(draft: _Draft, by_id: Mapping[str, _Draft]) -> None:
    for i, target in enumerate(draft.next):
        found = by_id.get(target)
        if found is None:
            draft.where.bad(f"next[{i}]", f"points to {_short(target)}, which is not a stage id")
        elif found.type is StageType.START:
            draft.where.bad(f"next[{i}]", "points to the Start stage, which takes no input")


def _check_reachable(by_id: Mapping[str, _Draft], start: str) -> None:
    seen = {start}
    queue = deque([start])
    while queue:
        for target in by_id[queue.popleft()].next:
            if target in by_id and target not in seen:
                seen.add(target)
                queue.append(target)
    for stage_id, draft in by_id.items():
        if stage_id not in seen:
            draft.where.bad("", "cannot be reached from Start")


def _check_loops(by_id: Mapping[str, _Draft]) -> None:
    auto = {i: d for i, d in by_id.items() if d.automatic()}
    succ = {i: [t for t in d.next if t in auto] for i, d in auto.items()}
    for component in _components(list(auto), succ):
        head = component[0]
        cycle = _cycle_through(head, set(component), succ)
        if cycle:
            names = " -> ".join(auto[i].name for i in cycle)
            auto[head].where.bad(
                "next",
                f"closes a loop of automatic stages ({names}) that no Label, Review or Hold"
                " stage breaks: a task would circle forever",
            )


def _components(nodes: Sequence[str], succ: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Strongly connected components (Kosaraju, iterative), each in ``nodes`` order."""
    order: list[str] = []
    seen: set[str] = set()
    for root in nodes:
        if root in seen:
            continue
        seen.add(root)
        stack = [(root, iter(succ[root]))]
        while stack:
            node, children = stack[-1]
            child = next((c for c in children if c not in seen), None)
            if child is None:
                stack.pop()
                order.append(node)
            else:
                seen.add(child)
                stack.append((child, iter(succ[child])))
    pred: dict[str, list[str]] = {n: [] for n in nodes}
    for node in nodes:
        for child in succ[node]:
            pred[child].append(node)
    rank = {n: i for i, n in enumerate(nodes)}
    assigned: set[str] = set()
    components: list[list[str]] = []
    for root in reversed(order):
        if root not in assigned:
            components.append(sorted(_collect(root, pred, assigned), key=rank.__getitem__))
    return components


def _collect(root: str, pred: Mapping[str, Sequence[str]], assigned: set[str]) -> list[str]:
    assigned.add(root)
    found, stack = [], [root]
    while stack:
        node = stack.pop()
        found.append(node)
        for parent in pred[node]:
            if parent not in assigned:
                assigned.add(parent)
                stack.append(parent)
    return found


def _cycle_through(
    head: str, members: set[str], succ: Mapping[str, Sequence[str]]
) -> list[str] | None:
    """The shortest cycle from ``head`` back to itself inside its component, if any."""
    parent: dict[str, str] = {}
    queue = deque([head])
    while queue:
        node = queue.popleft()
        for child in succ[node]:
            if child == head:
                path = [node]
                while path[-1] != head:
                    path.append(parent[path[-1]])
                return [*reversed(path), head]
            if child in members and child not in parent:
                parent[child] = node
                queue.append(child)
    return None


# -- back to JSON ---------------------------------------------------------------------------


def _secret_json(secret: Secret, reveal: bool) -> object:
    return secret.reveal() if reveal else {"set": True, "last4": secret.last4}


def _auth_json(auth: Auth, reveal: bool) -> dict[str, object]:
    if isinstance(auth, SecretAuth):
        shown: dict[str, object] = {"type": "secret", "secret": _secret_json(auth.secret, reveal)}
        if auth.previous is not None and auth.previous_until is not None:
            shown["previousSecret"] = _secret_json(auth.previous, reveal)
            shown["previousUntil"] = _iso(auth.previous_until)
        return shown
    if isinstance(auth, BearerAuth):
        return {"type": "bearer", "token": _secret_json(auth.token, reveal)}
    return {"type": "none"}


def _iso(epoch: float) -> str:
    moment = _EPOCH + round(epoch * 1000) * _MILLISECOND
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _rule_json(rule: Rule) -> dict[str, object]:
    if isinstance(rule, AnnotationRule):
        return {"kind": "annotation", "schemaId": rule.schema_id, "present": rule.present}
    if isinstance(rule, AnnotatorRule):
        return {"kind": "annotator", "emails": list(rule.emails)}
    if isinstance(rule, SampleRule):
        return {"kind": "sample", "percent": rule.percent}
    return {"kind": "batch", "batches": list(rule.batches)}


def _settings_json(settings: Settings, reveal: bool) -> dict[str, object]:
    if isinstance(settings, StartSettings):
        return {"autoForward": settings.auto_forward}
    if isinstance(settings, HoldSettings):
        batches = settings.release_batches
        return {} if batches is None else {"releaseBatches": list(batches)}
    if isinstance(settings, LogicSettings):
        return {"rules": [_rule_json(r) for r in settings.rules]}
    if isinstance(settings, WebhookSettings):
        shown = {
            "url": settings.url,
            "auth": _auth_json(settings.auth, reveal),
            "format": settings.format,
            "signatures": list(settings.signatures),
            "timeoutMs": settings.timeout_ms,
            "mode": settings.mode,
        }
        if settings.ca_bundle is not None:
            shown["caBundle"] = settings.ca_bundle
        return shown
    return {}


def to_json(
    workflow: Workflow,
    *,
    reveal_secrets: bool = False,
    seal: Callable[[str], str] | None = None,
) -> list[dict[str, object]]:
    """The workflow as a JSON list of stages, defaults filled in.

    Secrets show as ``{"set": true, "last4": "..."}`` unless ``reveal_secrets`` (for the
    store only: never for a response or a log), or as ``{"sealed": seal(value)}`` when
    ``seal`` is given (encrypted at rest). ``parse`` of the revealed form, or of the sealed
    form with the matching ``unseal``, gives back an equal Workflow.
    """
    if seal is not None:
        shown = to_json(workflow, reveal_secrets=True)
        return cast(list[dict[str, object]], _map_secrets(shown, lambda v: _sealed(v, seal)))
    out: list[dict[str, object]] = []
    for stage in workflow.stages.values():
        item: dict[str, object] = {
            "id": stage.id,
            "type": stage.type.value,
            "name": stage.name,
            "next": list(stage.next),
        }
        item.update(_settings_json(stage.settings, reveal_secrets))
        for key, value in stage.extra.items():
            item.setdefault(key, copy.deepcopy(value))
        out.append(item)
    return out


def _origin(url: object) -> tuple[str, str | None, int | None] | None:
    if not isinstance(url, str):
        return None
    try:
        parts = urlsplit(url)
        return parts.scheme, parts.hostname, parts.port
    except ValueError:
        return None


def _stored_auth(raw: Mapping[object, object], old: Workflow) -> Auth | None:
    """The stored auth a stage's update may keep secrets from: same stage and origin."""
    stage_id = raw.get("id")
    settings = webhook_settings(old, stage_id) if isinstance(stage_id, str) else None
    if settings is None:
        return None
    # A secret follows the URL it was given for: sent to a new host, a bearer token leaks.
    if _origin(raw.get("url")) != _origin(settings.url):
        return None
    return settings.auth


def _left_out(value: object) -> bool:
    return value is None or value == "" or _is_mask(value)


def _merge_stage(raw: object, old: Workflow) -> object:
    if not isinstance(raw, dict) or not isinstance(raw.get("auth"), dict):
        return raw
    stored = _stored_auth(raw, old)
    auth: dict[object, object] = raw["auth"]
    kind = auth.get("type")
    if isinstance(stored, BearerAuth) and kind == "bearer" and _left_out(auth.get("token")):
        return {**raw, "auth": {**auth, "token": stored.token.reveal()}}
    if not isinstance(stored, SecretAuth) or kind != "secret":
        return raw
    merged = dict(auth)
    given = auth.get("secret")
    if _left_out(given):
        merged["secret"] = stored.secret.reveal()
    if _is_mask(auth.get("previousSecret")):
        # The mask names the secret being replaced: the stored one when a new one is
        # given, else the stored previous one (a re-save during the overlap).
        replaced = not _left_out(given) and given != stored.secret.reveal()
        previous = stored.secret if replaced else stored.previous
        if previous is not None:
            merged["previousSecret"] = previous.reveal()
    return {**raw, "auth": merged}


def merge_secrets(new: object, old: Workflow) -> object:
    """``new`` (workflow JSON) with each secret it leaves out taken from ``old``.

    A Webhook stage's secret or token counts as left out when it is missing, null, "" or
    the mask that to_json shows. It is kept only for the stage with the same id, the same
    auth type and a URL of the same scheme, host and port; otherwise it stays left out and
    ``parse`` asks for it. ``previousSecret`` given as the mask is the secret being
    replaced: the stored secret when a new one is given (a rotation started without typing
    the old secret), else the stored previous one; left out, the overlap ends.
    Anything malformed is returned as it is, for ``parse`` to report.
    """
    stages = new.get("stages") if isinstance(new, dict) else new
    if not isinstance(stages, list):
        return new
    merged = [_merge_stage(raw, old) for raw in stages]
    return {**new, "stages": merged} if isinstance(new, dict) else merged


# -- the default workflow -------------------------------------------------------------------

# Ango names its default stages by their names and gives added stages UUIDs: these are
# fixed UUIDs, so every default workflow has the same ids.
DEFAULT_WEBHOOK_ID: Final = "6f1d2c3b-8a4e-4f5d-9b6c-1e2f3a4b5c6d"
DEFAULT_REVIEW_ID: Final = "9c8b7a6d-5e4f-4a3b-8c2d-1f0e9d8c7b6a"


def default_workflow(
    webhook_url: str,
    *,
    secret: str | None = None,
    format: PayloadFormat = "ango-2023",
    mode: WebhookMode = "pass",
) -> Workflow:
    """Start -> Label -> Webhook -> Review -> Complete, a reject going back to Label.

    Raises WorkflowError for a bad URL or secret, as ``parse`` would.
    """
    auth: dict[str, object] = {"type": "none"}
    if secret is not None:
        auth = {"type": "secret", "secret": secret}
    webhook = {"url": webhook_url, "auth": auth, "format": format, "mode": mode}
    return parse(
        [
            {"id": "Start", "type": "Start", "name": "Start", "next": ["Label"]},
            {"id": "Label", "type": "Label", "name": "Label", "next": [DEFAULT_WEBHOOK_ID]},
            {
                "id": DEFAULT_WEBHOOK_ID,
                "type": "Webhook",
                "name": "Webhook",
                "next": [DEFAULT_REVIEW_ID],
                **webhook,
            },
            {
                "id": DEFAULT_REVIEW_ID,
                "type": "Review",
                "name": "Review",
                "next": ["Complete", "Label"],
            },
            {"id": "Complete", "type": "Complete", "name": "Complete", "next": []},
        ]
    )
