"""Workflow validation, JSON round trips with secrets, and routing."""

from __future__ import annotations

import json
from collections import deque
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hookstage import workflow as wf
from hookstage.workflow import StageType, TaskFacts, WorkflowError

HOOK = "https://hooks.example.com/ango"
SECRET = "s3cret-value-that-must-never-show"
TOKEN = "tok_abcdefghijklmnop0123"

Json = dict[str, Any]


def stage(stage_id: str, stage_type: str, *targets: str, **settings: Any) -> Json:
    return {"id": stage_id, "type": stage_type, "name": stage_id, "next": list(targets), **settings}


def chain(*middle: Json) -> list[Json]:
    """Start -> middle... -> Complete: each middle stage must already point where it goes."""
    first = middle[0]["id"] if middle else "Complete"
    return [stage("Start", "Start", first), *middle, stage("Complete", "Complete")]


def refusal(data: object, **kwargs: Any) -> WorkflowError:
    with pytest.raises(WorkflowError) as caught:
        wf.parse(data, **kwargs)
    return caught.value


def problems(data: object, **kwargs: Any) -> list[wf.WorkflowProblem]:
    return list(refusal(data, **kwargs).problems)


def outcome(data: object) -> wf.Workflow | WorkflowError:
    """The workflow, or the error parse raised: nothing else may come out."""
    try:
        return wf.parse(data)
    except WorkflowError as error:
        return error


def fields(data: object, **kwargs: Any) -> set[tuple[str | None, str]]:
    return {(p.stage_id, p.field) for p in problems(data, **kwargs)}


def facts(task_id: str = "t1", **kwargs: Any) -> TaskFacts:
    return TaskFacts(task_id, **kwargs)


# -- parsing and defaults ---------------------------------------------------------------------


def test_default_workflow_is_start_label_webhook_review_complete() -> None:
    flow = wf.default_workflow(HOOK, secret=SECRET)
    hook, review = wf.DEFAULT_WEBHOOK_ID, wf.DEFAULT_REVIEW_ID
    assert list(flow.stages) == ["Start", "Label", hook, review, "Complete"]
    assert [s.name for s in flow.stages.values()] == [
        "Start",
        "Label",
        "Webhook",
        "Review",
        "Complete",
    ]
    assert flow.start == "Start"
    assert wf.edges(flow) == [
        ("Start", "Label", ""),
        ("Label", hook, ""),
        (hook, review, ""),
        (review, "Complete", "accept"),
        (review, "Label", "reject"),
    ]
    settings = flow.stages[hook].settings
    assert isinstance(settings, wf.WebhookSettings)
    assert settings.url == HOOK
    assert isinstance(settings.auth, wf.SecretAuth)
    assert settings.auth.secret.reveal() == SECRET
    assert wf.default_workflow(HOOK) == wf.default_workflow(HOOK)  # stable ids


def test_default_workflow_refuses_a_bad_url() -> None:
    with pytest.raises(WorkflowError, match="url must start with http:// or https://"):
        wf.default_workflow("ftp://files.example.com/")


def test_parse_accepts_a_list_or_an_object_with_stages() -> None:
    stages = chain(stage("Label", "Label", "Complete"))
    assert wf.parse(stages) == wf.parse({"stages": stages})


def test_settings_get_their_defaults() -> None:
    flow = wf.parse(chain(stage("Hook", "Webhook", "Complete", url=HOOK)))
    start, hook = flow.stages["Start"].settings, flow.stages["Hook"].settings
    assert start == wf.StartSettings(auto_forward=True)
    assert hook == wf.WebhookSettings(
        url=HOOK,
        auth=wf.NoAuth(),
        format="ango-2023",
        signatures=(),
        timeout_ms=15000,
        mode="pass",
    )
    shown = wf.to_json(flow)[1]
    assert shown["auth"] == {"type": "none"}
    assert shown["timeoutMs"] == 15000
    assert shown["mode"] == "pass"


def test_name_defaults_to_the_type() -> None:
    flow = wf.parse([{"id": "a", "type": "Start", "next": ["b"]}, {"id": "b", "type": "Complete"}])
    assert flow.stages["a"].name == "Start"
    assert flow.stages["b"].name == "Complete"
    assert flow.stages["b"].next == ()


def test_unknown_keys_survive_a_round_trip() -> None:
    stages = chain(stage("Label", "Label", "Complete", position={"x": 10, "y": 20}))
    flow = wf.parse(stages)
    assert flow.stages["Label"].extra == {"position": {"x": 10, "y": 20}}
    assert wf.to_json(flow)[1]["position"] == {"x": 10, "y": 20}


# -- validation -----------------------------------------------------------------------------


def test_a_review_with_one_output_is_named_by_stage_and_field() -> None:
    stages = chain({"id": "r1", "type": "Review", "name": "Review 1", "next": ["Complete"]})
    [problem] = problems(stages)
    assert str(problem) == (
        'stage "Review 1" (id r1): next has 1 output, Review needs 2 (accept, reject)'
    )
    assert (problem.where, problem.field) == ('stage "Review 1" (id r1)', "next")


def test_every_problem_is_reported_at_once() -> None:
    stages = [
        stage("Start", "Start", "L"),
        stage("L", "Label", "nowhere"),
        stage("L", "Label", "Complete"),
        stage("R", "Review", "Complete"),
        stage("X", "Mystery", "Complete"),
        stage("Hook", "Webhook", "Complete", url="ftp://x", timeoutMs=5),
        "not a stage",
        {"type": "Label", "next": ["Complete"]},
        stage("Complete", "Complete"),
    ]
    found = fields(stages)
    assert found == {
        ("L", "next[0]"),
        ("L", "id"),
        ("R", "next"),
        ("R", ""),  # unreachable
        ("X", "type"),
        ("X", ""),
        ("Hook", "url"),
        ("Hook", "timeoutMs"),
        ("Hook", ""),
        ("Complete", ""),  # the L that counts points nowhere
        (None, ""),  # stages[6] is not an object
        (None, "id"),  # stages[7] has no id
    }
    by_index = {p.index for p in problems(stages) if p.stage_id is None}
    assert by_index == {6, 7}
    text = str(refusal(stages))
    assert text.startswith("invalid workflow (12 problems):\n- ")
    assert "stages[6]: expected a stage object" in text


@pytest.mark.parametrize(
    ("stages", "expected"),
    [
        ([stage("Complete", "Complete")], "stages need exactly one Start stage, found 0"),
        ([], "stages need exactly one Start stage, found 0"),
        (
            [stage("A", "Start", "C"), stage("B", "Start", "C"), stage("C", "Complete")],
            "stages need exactly one Start stage, found 2 'A' 'B'",
        ),
        ({"nodes": []}, 'stages expected: a list of stages, or {"stages": [...]}'),
        ("Start", 'stages expected: a list of stages, or {"stages": [...]}'),
    ],
)
def test_workflow_level_problems(stages: object, expected: str) -> None:
    assert f"workflow: {expected}" in [str(p) for p in problems(stages)]


def test_outputs_are_counted_per_type() -> None:
    stages = [
        stage("Start", "Start"),
        stage("Lo", "Logic", "Complete", rules=[{"kind": "sample", "percent": 5}]),
        stage("Gate", "Webhook", "Complete", "Complete", "Complete", url=HOOK, mode="gate"),
        stage("Pass", "Webhook", "Complete", "Complete", url=HOOK),
        stage("Complete", "Complete", "Start"),
    ]
    messages = {p.stage_id: p.message for p in problems(stages) if p.field == "next"}
    assert messages == {
        "Start": "next has 0 outputs, Start needs 1",
        "Lo": "next has 1 output, Logic with 1 rules needs 2 (one per rule, else)",
        "Gate": "next has 3 outputs, Webhook in gate mode needs 1 or 2 (delivered, failure)",
        "Pass": "next has 2 outputs, Webhook in pass mode needs 1",
        "Complete": "next has 1 output, Complete needs none (it is the end)",
    }


def test_a_gate_webhook_may_have_a_failure_output() -> None:
    gate = stage("Gate", "Webhook", "Complete", "Archive", url=HOOK, mode="gate")
    flow = wf.parse([*chain(gate), stage("Archive", "Archive")])
    assert wf.failure_output(flow.stages["Gate"]) == wf.GateOutput.FAILURE
    assert wf.output_labels(flow.stages["Gate"]) == ("delivered", "failure")
    single = wf.parse(chain(stage("Gate", "Webhook", "Complete", url=HOOK, mode="gate")))
    assert wf.failure_output(single.stages["Gate"]) is None


def test_targets_must_exist_and_never_be_start() -> None:
    stages = chain(stage("L", "Label", "Start"))
    assert [str(p) for p in problems(stages)] == [
        'stage "L" (id L): next[0] points to the Start stage, which takes no input',
        'stage "Complete" (id Complete): cannot be reached from Start',
    ]
    assert ("L", "next[0]") in fields(chain(stage("L", "Label", "ghost")))
    assert ("L", "next[0]") in fields(chain(stage("L", "Label", "")))


def test_a_loop_of_automatic_stages_is_refused() -> None:
    rule = {"kind": "batch", "batches": ["b"]}
    stages = chain(
        stage("Lo", "Logic", "Hook", "Complete", name="Split", rules=[rule]),
        stage("Hook", "Webhook", "Lo", url=HOOK, name="Notify"),
    )
    [problem] = problems(stages)
    assert problem.stage_id == "Lo"
    assert problem.message.startswith(
        "next closes a loop of automatic stages (Split -> Notify -> Split)"
    )


def test_a_gate_webhook_does_not_break_a_loop_but_a_human_stage_does() -> None:
    rule = {"kind": "sample", "percent": 50}
    gate_loop = chain(
        stage("Lo", "Logic", "Hook", "Complete", rules=[rule]),
        stage("Hook", "Webhook", "Lo", url=HOOK, mode="gate"),
    )
    assert ("Lo", "next") in fields(gate_loop)
    broken = chain(
        stage("Lo", "Logic", "Hold", "Complete", rules=[rule]),
        stage("Hold", "Hold", "Lo"),
    )
    assert wf.parse(broken).stages["Hold"].type is StageType.HOLD


def test_a_logic_stage_looping_on_itself_is_refused() -> None:
    stages = chain(stage("Lo", "Logic", "Lo", "Complete", rules=[{"kind": "sample", "percent": 1}]))
    assert ("Lo", "next") in fields(stages)


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({}, "url"),
        ({"url": "ftp://hooks.example.com/"}, "url"),
        ({"url": "https://user:pw@hooks.example.com/"}, "url"),
        ({"url": "https://hooks.example.com/a b"}, "url"),
        ({"url": "https://hooks.example.com:99999/"}, "url"),
        ({"url": "https://[::1/"}, "url"),
        ({"url": "https:///path"}, "url"),
        ({"url": "https://h.example.com/" + "a" * 3000}, "url"),
        ({"url": 7}, "url"),
        ({"auth": {"type": "magic"}}, "auth"),
        ({"auth": "secret"}, "auth"),
        ({"auth": {"type": "secret"}}, "auth.secret"),
        ({"auth": {"type": "secret", "secret": ""}}, "auth.secret"),
        ({"auth": {"type": "secret", "secret": " padded "}}, "auth.secret"),
        ({"auth": {"type": "secret", "secret": "\ud800bad"}}, "auth.secret"),
        ({"auth": {"type": "secret", "secret": {"set": True, "last4": "abcd"}}}, "auth.secret"),
        ({"auth": {"type": "bearer", "token": "has space"}}, "auth.token"),
        ({"auth": {"type": "bearer"}}, "auth.token"),
        ({"format": "ango-2024"}, "format"),
        ({"signatures": "hub-256"}, "signatures"),
        ({"signatures": ["hub-512"]}, "signatures[0]"),
        ({"signatures": ["hub-256"]}, "signatures"),  # needs auth secret
        (
            {"auth": {"type": "secret", "secret": SECRET}, "signatures": ["hub-256", "hub-256"]},
            "signatures[1]",
        ),
        (
            {"auth": {"type": "secret", "secret": "not base64!"}, "signatures": ["standard"]},
            "auth.secret",
        ),
        ({"timeoutMs": 99}, "timeoutMs"),
        ({"timeoutMs": 120001}, "timeoutMs"),
        ({"timeoutMs": 1500.0}, "timeoutMs"),
        ({"timeoutMs": True}, "timeoutMs"),
        ({"mode": "block"}, "mode"),
        ({"secret": SECRET}, "secret"),
    ],
)
def test_webhook_settings_problems_name_the_field(settings: Json, field: str) -> None:
    hook = stage("Hook", "Webhook", "Complete", **{"url": HOOK, **settings})
    if settings == {}:
        del hook["url"]
    found = problems(chain(hook))
    assert ("Hook", field) in {(p.stage_id, p.field) for p in found}
    for problem in found:
        assert SECRET not in str(problem)
        assert "pw@" not in str(problem)


def test_good_webhook_settings_parse() -> None:
    hook = stage(
        "Hook",
        "Webhook",
        "Complete",
        url="http://127.0.0.1:8080/hook?x=1",
        auth={"type": "secret", "secret": "whsec_" + "QUJD" * 8},
        format="ango-2025",
        signatures=["hub-256", "standard"],
        timeoutMs=100,
        mode="gate",
    )
    settings = wf.parse(chain(hook)).stages["Hook"].settings
    assert isinstance(settings, wf.WebhookSettings)
    assert settings.signatures == ("hub-256", "standard")
    assert (settings.format, settings.timeout_ms, settings.mode) == ("ango-2025", 100, "gate")
    bearer = stage("Hook", "Webhook", "Complete", url=HOOK, auth={"type": "bearer", "token": TOKEN})
    settings = wf.parse(chain(bearer)).stages["Hook"].settings
    assert isinstance(settings, wf.WebhookSettings)
    assert settings.auth == wf.BearerAuth(wf.Secret(TOKEN))


@pytest.mark.parametrize(
    ("rules", "field"),
    [
        ([], "rules"),
        ("sample", "rules"),
        ([{"kind": "vibes"}], "rules[0].kind"),
        (["sample"], "rules[0].kind"),
        ([{"kind": "annotation"}], "rules[0].schemaId"),
        ([{"kind": "annotation", "schemaId": "a", "present": "yes"}], "rules[0].present"),
        ([{"kind": "annotator", "emails": []}], "rules[0].emails"),
        ([{"kind": "annotator", "emails": ["bob"]}], "rules[0].emails[0]"),
        ([{"kind": "annotator", "emails": [3]}], "rules[0].emails[0]"),
        ([{"kind": "sample", "percent": 101}], "rules[0].percent"),
        ([{"kind": "sample", "percent": -1}], "rules[0].percent"),
        ([{"kind": "sample", "percent": float("nan")}], "rules[0].percent"),
        ([{"kind": "sample", "percent": True}], "rules[0].percent"),
        ([{"kind": "batch", "batches": "b1"}], "rules[0].batches"),
        ([{"kind": "batch", "batches": ["b1", ""]}], "rules[0].batches[1]"),
    ],
)
def test_logic_rule_problems_name_the_rule(rules: object, field: str) -> None:
    targets = ["Complete"] * (len(rules) + 1 if isinstance(rules, list) else 2)
    logic = stage("Lo", "Logic", *targets, rules=rules)
    assert ("Lo", field) in fields(chain(logic))


def test_annotation_rules_are_checked_against_the_schema_when_given() -> None:
    rule = {"kind": "annotation", "schemaId": "car", "present": True}
    stages = chain(stage("Lo", "Logic", "Complete", "Complete", rules=[rule]))
    wf.parse(stages)
    wf.parse(stages, schema_ids={"car"})
    [problem] = problems(stages, schema_ids={"truck"})
    assert problem.message == "rules[0].schemaId 'car' is not in the category schema"


@pytest.mark.parametrize(
    ("item", "field"),
    [
        ({"autoForward": "yes"}, "autoForward"),
        ({"name": ""}, "name"),
        ({"name": 5}, "name"),
        ({"next": "Complete"}, "next"),
        ({"next": [5]}, "next[0]"),
        ({"id": ""}, "id"),
        ({"type": "start"}, "type"),
    ],
)
def test_common_field_problems(item: Json, field: str) -> None:
    start = {**stage("Start", "Start", "Complete"), **item}
    assert field in {p.field for p in problems([start, stage("Complete", "Complete")])}


def test_hold_release_batches() -> None:
    hold = stage("Hold", "Hold", "Complete", releaseBatches=["urgent"])
    flow = wf.parse(chain(hold))
    held = flow.stages["Hold"]
    assert wf.releasable(held, facts(batches=frozenset({"urgent", "other"})))
    assert not wf.releasable(held, facts(batches=frozenset({"other"})))
    open_hold = wf.parse(chain(stage("Hold", "Hold", "Complete"))).stages["Hold"]
    assert wf.releasable(open_hold, facts())
    assert ("Hold", "releaseBatches") in fields(chain({**hold, "releaseBatches": []}))


# -- secrets --------------------------------------------------------------------------------


def secret_flow(url: str = HOOK, auth: Json | None = None) -> list[Json]:
    auth = auth or {"type": "secret", "secret": SECRET}
    return chain(stage("Hook", "Webhook", "Complete", url=url, auth=auth))


def test_secrets_never_show_in_repr_str_or_masked_json() -> None:
    flow = wf.parse(secret_flow())
    assert SECRET not in repr(flow)
    assert SECRET not in str(flow)
    shown = json.dumps(wf.to_json(flow))
    assert SECRET not in shown
    assert wf.to_json(flow)[1]["auth"] == {
        "type": "secret",
        "secret": {"set": True, "last4": SECRET[-4:]},
    }
    assert wf.to_json(flow, reveal_secrets=True)[1]["auth"] == {"type": "secret", "secret": SECRET}


def test_secret_value_object() -> None:
    secret = wf.Secret("abcdefghijkl")
    assert (repr(secret), str(secret), f"{secret}") == ("Secret('****')", "****", "****")
    assert secret.last4 == "ijkl"
    assert wf.Secret("short-secr").last4 == ""
    assert secret == wf.Secret("abcdefghijkl")
    assert secret != wf.Secret("abcdefghijkm")
    assert secret != "abcdefghijkl"
    assert len({secret, wf.Secret("abcdefghijkl")}) == 1


def test_problems_in_a_stage_with_a_secret_do_not_show_it() -> None:
    bad = secret_flow(url="ftp://x")
    bad[1]["auth"]["secret"] = SECRET
    bad[1]["signatures"] = ["standard"]
    error = refusal(bad)
    assert SECRET not in str(error)
    assert SECRET not in repr(error.problems)


def test_a_revealed_workflow_parses_back_equal() -> None:
    flow = wf.parse(secret_flow())
    assert wf.parse(wf.to_json(flow, reveal_secrets=True)) == flow


def test_merge_secrets_keeps_a_secret_left_out() -> None:
    old = wf.parse(secret_flow())
    for left_out in ({"set": True, "last4": "ever"}, None, ""):
        new = secret_flow(auth={"type": "secret", "secret": left_out})
        assert wf.parse(wf.merge_secrets(new, old)) == old
    missing = secret_flow(auth={"type": "secret"})
    assert wf.parse(wf.merge_secrets(missing, old)) == old
    wrapped = wf.merge_secrets({"stages": wf.to_json(old), "version": 2}, old)
    assert isinstance(wrapped, dict)
    assert wrapped["version"] == 2
    assert wf.parse(wrapped) == old


def test_merge_secrets_keeps_a_bearer_token() -> None:
    old = wf.parse(secret_flow(auth={"type": "bearer", "token": TOKEN}))
    new = wf.to_json(old)
    assert TOKEN not in json.dumps(new)
    assert wf.parse(wf.merge_secrets(new, old)) == old


def test_merge_secrets_takes_a_new_secret() -> None:
    old = wf.parse(secret_flow())
    new = secret_flow(auth={"type": "secret", "secret": "a-brand-new-secret"})
    merged = wf.parse(wf.merge_secrets(new, old)).stages["Hook"].settings
    assert isinstance(merged, wf.WebhookSettings)
    assert isinstance(merged.auth, wf.SecretAuth)
    assert merged.auth.secret.reveal() == "a-brand-new-secret"


@pytest.mark.parametrize(
    "change",
    [
        {"url": "https://elsewhere.example.net/ango"},  # a secret follows its host
        {"url": "http://hooks.example.com/ango"},
        {"url": "https://hooks.example.com:8443/ango"},
        {"auth": {"type": "bearer", "token": {"set": True}}},  # not the stored auth type
        {"id": "Other"},
    ],
)
def test_merge_secrets_does_not_carry_a_secret_to_a_changed_stage(change: Json) -> None:
    old = wf.parse(secret_flow())
    new = wf.to_json(old)
    new[1].update(change)
    new[0]["next"] = [new[1]["id"]]
    found = {p.field for p in problems(wf.merge_secrets(new, old))}
    assert found & {"auth.secret", "auth.token"}


def test_merge_secrets_keeps_a_secret_across_a_path_change() -> None:
    old = wf.parse(secret_flow())
    new = wf.to_json(old)
    new[1]["url"] = HOOK + "/v2"
    merged = wf.parse(wf.merge_secrets(new, old)).stages["Hook"].settings
    assert isinstance(merged, wf.WebhookSettings)
    assert merged.auth == wf.SecretAuth(wf.Secret(SECRET))


def test_merge_secrets_passes_malformed_input_through() -> None:
    old = wf.parse(secret_flow())
    for junk in (None, 5, "x", {"stages": 3}, [1, {"id": 2}], [{"id": "Hook", "auth": 1}]):
        assert wf.merge_secrets(junk, old) == junk


# -- routing --------------------------------------------------------------------------------


def test_import_at_a_forwarding_start_moves_on_at_once() -> None:
    flow = wf.default_workflow(HOOK)
    assert wf.enter(flow, flow.start, facts()).entered == ("Start", "Label")


def test_a_start_that_waits_keeps_the_task() -> None:
    flow = wf.parse(chain(stage("Label", "Label", "Complete")))
    waiting = wf.parse([{**wf.to_json(flow)[0], "autoForward": False}, *wf.to_json(flow)[1:]])
    route = wf.enter(waiting, "Start", facts())
    assert route.entered == ("Start",)
    assert route.final == "Start"
    assert wf.is_human(waiting.stages["Start"])
    assert wf.advance(waiting, "Start", facts()).entered == ("Label",)


def test_a_submit_passes_the_webhook_and_rests_at_review() -> None:
    flow = wf.default_workflow(HOOK)
    route = wf.advance(flow, "Label", facts())
    assert route.entered == (wf.DEFAULT_WEBHOOK_ID, wf.DEFAULT_REVIEW_ID)
    assert route.final == wf.DEFAULT_REVIEW_ID
    assert wf.webhook_stages(flow) == (flow.stages[wf.DEFAULT_WEBHOOK_ID],)


def test_review_accept_and_reject() -> None:
    flow = wf.default_workflow(HOOK)
    review = wf.DEFAULT_REVIEW_ID
    accept = wf.advance(flow, review, facts(), output=wf.ReviewOutput.ACCEPT)
    reject = wf.advance(flow, review, facts(), output=wf.ReviewOutput.REJECT)
    assert accept.entered == ("Complete",)
    assert reject.entered == ("Label",)


def test_a_gate_webhook_holds_the_task_until_delivered_or_failed() -> None:
    gate = stage("Gate", "Webhook", "Label", "Archive", url=HOOK, mode="gate")
    flow = wf.parse(
        [
            stage("Start", "Start", "Gate"),
            gate,
            stage("Label", "Label", "Complete"),
            stage("Complete", "Complete"),
            stage("Archive", "Archive"),
        ]
    )
    assert wf.enter(flow, "Start", facts()).entered == ("Start", "Gate")
    delivered = wf.advance(flow, "Gate", facts(), output=wf.GateOutput.DELIVERED)
    failed = wf.advance(flow, "Gate", facts(), output=wf.GateOutput.FAILURE)
    assert delivered.entered == ("Label",)
    assert failed.entered == ("Archive",)


def two_webhooks_then_logic(rules: list[Json]) -> wf.Workflow:
    targets = [f"Out{i}" for i in range(len(rules) + 1)]
    return wf.parse(
        [
            stage("Start", "Start", "H1"),
            stage("H1", "Webhook", "H2", url=HOOK),
            stage("H2", "Webhook", "Lo", url=HOOK + "/2"),
            stage("Lo", "Logic", *targets, rules=rules),
            *(stage(t, "Label", "Complete") for t in targets),
            stage("Complete", "Complete"),
        ]
    )


def test_every_stage_passed_is_in_the_route() -> None:
    flow = two_webhooks_then_logic([{"kind": "batch", "batches": ["b"]}])
    route = wf.enter(flow, "Start", facts(batches=frozenset({"b"})))
    assert route.entered == ("Start", "H1", "H2", "Lo", "Out0")


@pytest.mark.parametrize(
    ("rule", "task", "output"),
    [
        ({"kind": "annotation", "schemaId": "car"}, facts(schema_ids=frozenset({"car"})), 0),
        ({"kind": "annotation", "schemaId": "car"}, facts(schema_ids=frozenset({"bus"})), 1),
        ({"kind": "annotation", "schemaId": "car", "present": False}, facts(), 0),
        (
            {"kind": "annotation", "schemaId": "car", "present": False},
            facts(schema_ids=frozenset({"car"})),
            1,
        ),
        (
            {"kind": "annotator", "emails": ["Ann@Example.com"]},
            facts(annotator="ann@example.COM"),
            0,
        ),
        (
            {"kind": "annotator", "emails": ["ann@example.com"]},
            facts(annotator="bob@example.com"),
            1,
        ),
        ({"kind": "annotator", "emails": ["ann@example.com"]}, facts(), 1),
        ({"kind": "batch", "batches": ["b1", "b2"]}, facts(batches=frozenset({"b2"})), 0),
        ({"kind": "batch", "batches": ["b1"]}, facts(batches=frozenset({"B1"})), 1),
        ({"kind": "sample", "percent": 100}, facts(), 0),
        ({"kind": "sample", "percent": 0}, facts(), 1),
    ],
)
def test_logic_rules(rule: Json, task: TaskFacts, output: int) -> None:
    flow = two_webhooks_then_logic([rule])
    assert wf.advance(flow, "H2", task).final == f"Out{output}"


def test_the_first_matching_rule_wins_and_else_is_last() -> None:
    rules = [
        {"kind": "batch", "batches": ["b1"]},
        {"kind": "batch", "batches": ["b1", "b2"]},
    ]
    flow = two_webhooks_then_logic(rules)
    assert wf.enter(flow, "Lo", facts(batches=frozenset({"b1"}))).final == "Out0"
    assert wf.enter(flow, "Lo", facts(batches=frozenset({"b2"}))).final == "Out1"
    assert wf.enter(flow, "Lo", facts()).final == "Out2"
    assert wf.output_labels(flow.stages["Lo"]) == ("batch is b1", "batch is b1 or b2", "else")


def test_sampling_is_reproducible_and_close_to_its_percent() -> None:
    flow = two_webhooks_then_logic([{"kind": "sample", "percent": 30}])
    routes = [wf.enter(flow, "Lo", facts(f"task-{i}")).final for i in range(2000)]
    again = [wf.enter(flow, "Lo", facts(f"task-{i}")).final for i in range(2000)]
    assert routes == again
    share = routes.count("Out0") / len(routes)
    assert 0.26 < share < 0.34


def test_sampling_differs_between_stages() -> None:
    rule = wf.SampleRule(50)
    picks_a = [wf.rule_matches(rule, facts(f"t{i}"), "A") for i in range(400)]
    picks_b = [wf.rule_matches(rule, facts(f"t{i}"), "B") for i in range(400)]
    assert picks_a != picks_b


def test_sample_rules_in_one_stage_share_the_bucket() -> None:
    rules = [{"kind": "sample", "percent": 10}, {"kind": "sample", "percent": 30}]
    flow = two_webhooks_then_logic(rules)
    finals = [wf.enter(flow, "Lo", facts(f"task-{i}")).final for i in range(3000)]
    assert 0.07 < finals.count("Out0") / 3000 < 0.13
    assert 0.16 < finals.count("Out1") / 3000 < 0.24


def test_stage_kinds() -> None:
    gate = stage("Gate", "Webhook", "Hold", url=HOOK, mode="gate")
    flow = wf.parse(
        [
            stage("Start", "Start", "Pass"),
            stage("Pass", "Webhook", "Gate", url=HOOK),
            gate,
            stage("Hold", "Hold", "Lo"),
            stage("Lo", "Logic", "Review", "Archive", rules=[{"kind": "sample", "percent": 9}]),
            stage("Review", "Review", "Complete", "Hold"),
            stage("Complete", "Complete"),
            stage("Archive", "Archive"),
        ]
    )
    table = {
        s.id: (wf.is_human(s), wf.is_automatic(s), wf.passes_through(s), wf.waits(s))
        for s in flow.stages.values()
    }
    assert table == {
        "Start": (False, True, True, False),
        "Pass": (False, True, True, False),
        "Gate": (False, True, False, True),
        "Hold": (True, False, False, True),
        "Lo": (False, True, True, False),
        "Review": (True, False, False, True),
        "Complete": (False, False, False, True),
        "Archive": (False, False, False, True),
    }
    assert wf.output_labels(flow.stages["Lo"]) == ("sample 9%", "else")
    assert [s.id for s in wf.webhook_stages(flow)] == ["Pass", "Gate"]


def test_rule_descriptions() -> None:
    assert wf.describe_rule(wf.AnnotationRule("car")) == "car present"
    assert wf.describe_rule(wf.AnnotationRule("car", present=False)) == "car absent"
    assert wf.describe_rule(wf.AnnotatorRule(("a@x", "b@x"))) == "annotator is a@x or b@x"
    assert wf.describe_rule(wf.SampleRule(12.5)) == "sample 12.5%"


def test_routing_errors_are_workflow_errors() -> None:
    flow = wf.default_workflow(HOOK)
    with pytest.raises(WorkflowError, match=r"next has no output 0 \(0 wired\)"):
        wf.advance(flow, "Complete", facts())
    with pytest.raises(WorkflowError, match="next has no output 2"):
        wf.advance(flow, wf.DEFAULT_REVIEW_ID, facts(), output=2)
    with pytest.raises(WorkflowError, match="no stage with id 'Nope'"):
        wf.enter(flow, "Nope", facts())


def test_the_loop_guard_stops_a_hand_built_loop() -> None:
    logic = wf.Stage("Lo", StageType.LOGIC, "Lo", ("Hook",), wf.LogicSettings(()))
    hook = wf.Stage("Hook", StageType.WEBHOOK, "Hook", ("Lo",), wf.WebhookSettings(HOOK))
    start = wf.Stage("Start", StageType.START, "Start", ("Lo",), wf.StartSettings())
    flow = wf.Workflow({"Start": start, "Lo": logic, "Hook": hook}, "Start")
    with pytest.raises(
        WorkflowError, match=r"loops through automatic stages \(Start -> Lo -> Hook -> Lo\)"
    ):
        wf.enter(flow, "Start", facts())


# -- properties -----------------------------------------------------------------------------

SCHEMA_IDS = ("a", "b", "c")
EMAILS = ("x@example.com", "Y@example.com")
BATCHES = ("b1", "b2")

rules_st = st.one_of(
    st.builds(
        lambda s, p: {"kind": "annotation", "schemaId": s, "present": p},
        st.sampled_from(SCHEMA_IDS),
        st.booleans(),
    ),
    st.builds(
        lambda e: {"kind": "annotator", "emails": e},
        st.lists(st.sampled_from(EMAILS), min_size=1, max_size=2),
    ),
    st.builds(
        lambda p: {"kind": "sample", "percent": p},
        st.integers(0, 100) | st.floats(0, 100),
    ),
    st.builds(
        lambda b: {"kind": "batch", "batches": b},
        st.lists(st.sampled_from(BATCHES), min_size=1, max_size=2),
    ),
)
facts_st = st.builds(
    TaskFacts,
    task_id=st.text(max_size=12),
    schema_ids=st.frozensets(st.sampled_from(SCHEMA_IDS)),
    annotator=st.sampled_from([None, "x@example.com", "y@EXAMPLE.com", "z@example.com"]),
    batches=st.frozensets(st.sampled_from(BATCHES)),
)
auth_st = st.sampled_from(
    [
        {"type": "none"},
        {"type": "secret", "secret": SECRET},
        {"type": "bearer", "token": TOKEN},
    ]
)
MIDDLE = ("Label", "Review", "Hold", "Logic", "pass", "gate", "Complete", "Archive")
AUTOMATIC = ("Logic", "pass", "gate")


def _settings(draw: st.DrawFn, kind: str) -> tuple[str, int, Json]:
    """The stage type, its number of outputs, and its settings."""
    if kind == "Logic":
        rules = draw(st.lists(rules_st, min_size=1, max_size=3))
        return "Logic", len(rules) + 1, {"rules": rules}
    if kind in ("pass", "gate"):
        outputs = draw(st.integers(1, 2)) if kind == "gate" else 1
        return "Webhook", outputs, {"url": HOOK, "mode": kind, "auth": draw(auth_st)}
    outputs = {"Label": 1, "Review": 2, "Hold": 1}.get(kind, 0)
    return kind, outputs, {}


@st.composite
def valid_workflows(draw: st.DrawFn) -> list[Json]:
    """Valid by construction: automatic stages only point forward or at human stages,
    every stage can reach the end, and what Start cannot reach is dropped."""
    middle = draw(st.lists(st.sampled_from(MIDDLE), max_size=6))
    kinds = ["Start", *middle, draw(st.sampled_from(["Complete", "Archive"]))]
    auto_start = draw(st.booleans())
    ids = ["Start", *(f"s{i}" for i in range(1, len(kinds)))]
    human = [i for i, k in enumerate(kinds) if k in ("Label", "Review", "Hold")]
    stages: list[Json] = []
    for i, kind in enumerate(kinds):
        if kind == "Start":
            stage_type, outputs, settings = "Start", 1, {"autoForward": auto_start}
        else:
            stage_type, outputs, settings = _settings(draw, kind)
        automatic = kind in AUTOMATIC or (kind == "Start" and auto_start)
        allowed = sorted(set(range(i + 1, len(kinds))) | (set(human) if automatic else set()))
        if not automatic:
            allowed = list(range(1, len(kinds)))
        targets = [ids[draw(st.sampled_from(allowed))] for _ in range(outputs)]
        stages.append(stage(ids[i], stage_type, *targets, **settings))
    return _reachable(stages)


def _reachable(stages: list[Json]) -> list[Json]:
    by_id = {s["id"]: s for s in stages}
    seen, queue = {"Start"}, deque(["Start"])
    while queue:
        for target in by_id[queue.popleft()]["next"]:
            if target not in seen:
                seen.add(target)
                queue.append(target)
    return [s for s in stages if s["id"] in seen]


def _check_routes(flow: wf.Workflow, task: TaskFacts) -> None:
    """From every stage and every output, the task ends where it waits."""
    for current in flow.stages.values():
        route = wf.enter(flow, current.id, task)
        _check_route(flow, route)
        for output in range(len(current.next)):
            _check_route(flow, wf.advance(flow, current.id, task, output=output))


def _check_route(flow: wf.Workflow, route: wf.Route) -> None:
    assert route.entered
    assert wf.waits(flow.stages[route.final])
    assert all(wf.passes_through(flow.stages[s]) for s in route.entered[:-1])
    assert len(route.entered) <= len(flow.stages)


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(valid_workflows(), facts_st)
def test_generated_valid_workflows_parse_and_always_route_to_a_waiting_stage(
    stages: list[Json], task: TaskFacts
) -> None:
    flow = wf.parse(stages)
    _check_routes(flow, task)


@PROPERTY
@given(valid_workflows())
def test_generated_workflows_round_trip_through_json(stages: list[Json]) -> None:
    flow = wf.parse(stages)
    assert wf.parse(wf.to_json(flow, reveal_secrets=True)) == flow
    masked = wf.to_json(flow)
    assert SECRET not in json.dumps(masked)
    assert TOKEN not in json.dumps(masked)
    assert wf.parse(wf.merge_secrets(masked, flow)) == flow
    assert len(wf.edges(flow)) == sum(len(s.next) for s in flow.stages.values())


@st.composite
def random_graphs(draw: st.DrawFn) -> list[Json]:
    """Any wiring between stages, loops of every kind included: the ones validation accepts
    must route without a loop. (Unreachable stages are dropped, outputs mostly counted right,
    so that what is refused is mostly refused for its loops.)"""
    ids = ["Start", *draw(st.lists(st.sampled_from("ABCDEF"), max_size=6, unique=True))]
    stages: list[Json] = []
    for stage_id in ids:
        if stage_id == "Start":
            stage_type, outputs, settings = "Start", 1, {"autoForward": draw(st.booleans())}
        else:
            stage_type, outputs, settings = _settings(draw, draw(st.sampled_from(MIDDLE)))
        count = draw(st.sampled_from([outputs] * 6 + [outputs + 1]))
        targets = [draw(st.sampled_from(ids[1:] or ["Start"])) for _ in range(count)]
        stages.append(stage(stage_id, stage_type, *targets, **settings))
    return _reachable(stages)


@settings(max_examples=400, deadline=None)
@given(random_graphs(), facts_st)
def test_a_validated_workflow_never_hits_the_loop_guard(
    stages: list[Json], task: TaskFacts
) -> None:
    flow = outcome(stages)
    if isinstance(flow, WorkflowError):
        event("refused")
        assert flow.problems
    else:
        event("valid")
        _check_routes(flow, task)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
stage_ids = st.sampled_from(["Start", "L", "H", "Complete", ""])
stage_like = st.fixed_dictionaries(
    {},
    optional={
        "id": stage_ids | json_values,
        "type": st.sampled_from([t.value for t in StageType]) | json_values,
        "name": st.text(max_size=5) | json_values,
        "next": st.lists(stage_ids | json_values, max_size=3) | json_values,
        "autoForward": st.booleans() | json_values,
        "rules": st.lists(rules_st | json_values, max_size=3) | json_values,
        "releaseBatches": st.lists(st.text(max_size=3)) | json_values,
        "url": st.sampled_from([HOOK, "http://[::1", "https://u@h/", "x"]) | json_values,
        "auth": auth_st | st.fixed_dictionaries({"type": json_values, "secret": json_values}),
        "format": st.sampled_from(["ango-2023", "ango-2025"]) | json_values,
        "signatures": st.lists(st.sampled_from(["hub-256", "standard"]) | json_values)
        | json_values,
        "timeoutMs": st.integers(0, 200000) | json_values,
        "mode": st.sampled_from(["pass", "gate"]) | json_values,
    },
)


@settings(max_examples=200, deadline=None)
@given(json_values | st.lists(stage_like | json_values, max_size=5))
def test_any_input_gives_a_workflow_or_a_workflow_error(data: object) -> None:
    old = wf.default_workflow(HOOK, secret=SECRET)
    for candidate in (data, {"stages": data}, wf.merge_secrets(data, old)):
        flow = outcome(candidate)
        if isinstance(flow, WorkflowError):
            assert flow.problems
            assert all(str(p) for p in flow.problems)
        else:
            again = wf.parse(wf.to_json(flow, reveal_secrets=True))
            # Compared as text: a NaN kept among the unknown keys is not equal to itself.
            assert _text(again) == _text(flow)


def _text(flow: wf.Workflow) -> str:
    return json.dumps(wf.to_json(flow, reveal_secrets=True), sort_keys=True)
