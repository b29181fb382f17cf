"""deploy/aws/template.yaml: cfn-lint clean, and its SAM expansion says what the issue asks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from triggergate.aws import dynamodb_schema as schema
from triggergate.aws.dynamodb_schema import TTL_ATTRIBUTE

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "aws" / "template.yaml"
# Exactly the API calls the adapters make (tests/aws/test_dynamodb.py checks the store's).
EXPECTED_ACTIONS = {
    "logs:CreateLogStream": "FunctionLogGroup",
    "logs:PutLogEvents": "FunctionLogGroup",
    "dynamodb:GetItem": "TriggerTable",
    "dynamodb:PutItem": "TriggerTable",
    "dynamodb:UpdateItem": "TriggerTable",
    "dynamodb:DeleteItem": "TriggerTable",
    "dynamodb:Query": "TriggerTable",
    "codepipeline:StartPipelineExecution": "PipelineName",
    "codepipeline:GetPipelineExecution": "PipelineName",
    "codepipeline:ListPipelineExecutions": "PipelineName",
    "codepipeline:GetPipeline": "PipelineName",
    "sns:Publish": "AlertTopic",
    "sqs:SendMessage": "DeadLetterQueue",
}


class _NoManagedPolicies:
    """The translator asks for AWS managed policies only when it builds roles; ours builds none."""

    def load(self) -> dict[str, str]:
        return {}


@pytest.fixture(scope="module")
def expanded() -> dict[str, Any]:
    """The template expanded offline by aws-sam-translator (an S3 CodeUri stands in for the build)."""
    from cfnlint.decode import decode
    from samtranslator.translator.transform import transform

    template, problems = decode(str(TEMPLATE))
    assert not problems
    plain = json.loads(json.dumps(template))
    plain["Globals"]["Function"]["CodeUri"] = "s3://bucket/code.zip"
    saved = os.environ.get("AWS_DEFAULT_REGION")
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    try:
        result: dict[str, Any] = transform(plain, {"PipelineName": "deploy"}, _NoManagedPolicies())
    finally:
        if saved is None:
            os.environ.pop("AWS_DEFAULT_REGION", None)
        else:
            os.environ["AWS_DEFAULT_REGION"] = saved
    return result


def _of_type(expanded: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in expanded["Resources"].items() if v["Type"] == kind}


def _statements(expanded: dict[str, Any]) -> list[dict[str, Any]]:
    roles = _of_type(expanded, "AWS::IAM::Role")
    found = [
        s
        for role in roles.values()
        for p in role["Properties"].get("Policies", [])
        for s in p["PolicyDocument"]["Statement"]
    ]
    for policy in _of_type(expanded, "AWS::IAM::Policy").values():
        found += policy["Properties"]["PolicyDocument"]["Statement"]
    return found


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_cfn_lint_finds_nothing() -> None:
    """cfn-lint (from the venv) reports no error, warning or informational finding."""
    lint = Path(sys.executable).with_name("cfn-lint")
    done = subprocess.run([str(lint), "--", str(TEMPLATE)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_ttl_is_enabled_on_the_attribute_the_store_writes(expanded: dict[str, Any]) -> None:
    """TTL is on the store's attribute name, and the Lambda's store URL names it the same."""
    table = expanded["Resources"]["TriggerTable"]["Properties"]
    assert table["TimeToLiveSpecification"] == {"AttributeName": TTL_ATTRIBUTE, "Enabled": True}
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    for function in _of_type(expanded, "AWS::Lambda::Function").values():
        url = function["Properties"]["Environment"]["Variables"]["TRIGGERGATE_STORE"]["Fn::Sub"]
        assert url.endswith(f"?ttl_attribute={TTL_ATTRIBUTE}")


def test_table_keys_and_indexes_match_the_store(expanded: dict[str, Any]) -> None:
    """The key schema, attribute types and both sparse indexes are those the store queries."""
    table = expanded["Resources"]["TriggerTable"]["Properties"]
    assert table["KeySchema"] == [{"AttributeName": schema.PK, "KeyType": "HASH"}]
    assert sorted(table["AttributeDefinitions"], key=str) == sorted(schema.ATTRIBUTES, key=str)
    assert table["GlobalSecondaryIndexes"] == schema.INDEXES


def test_both_api_kinds_are_throttled_at_the_stage(expanded: dict[str, Any]) -> None:
    """REST method settings and HTTP default route settings take the rate and burst parameters."""
    [rest] = _of_type(expanded, "AWS::ApiGateway::Stage").values()
    [setting] = rest["Properties"]["MethodSettings"]
    assert setting["ThrottlingRateLimit"] == {"Ref": "ThrottleRateLimit"}
    assert setting["ThrottlingBurstLimit"] == {"Ref": "ThrottleBurstLimit"}
    assert (setting["ResourcePath"], setting["HttpMethod"]) == ("/*", "*")
    [http] = _of_type(expanded, "AWS::ApiGatewayV2::Stage").values()
    route = http["Properties"]["DefaultRouteSettings"]
    assert route == {
        "ThrottlingRateLimit": {"Ref": "ThrottleRateLimit"},
        "ThrottlingBurstLimit": {"Ref": "ThrottleBurstLimit"},
    }


def test_api_kind_parameter_selects_exactly_one_api(expanded: dict[str, Any]) -> None:
    """Every REST resource carries IsRest, every HTTP one IsHttp; REST is the default."""
    assert expanded["Parameters"]["ApiKind"]["Default"] == "REST"
    for kind, condition in [("AWS::ApiGateway::", "IsRest"), ("AWS::ApiGatewayV2::", "IsHttp")]:
        api = [v for v in expanded["Resources"].values() if v["Type"].startswith(kind)]
        assert api
        assert all(v.get("Condition") == condition for v in api)
    assert expanded["Resources"]["RestFunction"]["Condition"] == "IsRest"
    assert expanded["Resources"]["HttpFunction"]["Condition"] == "IsHttp"


def test_waf_is_optional_rate_based_and_off_by_default(expanded: dict[str, Any]) -> None:
    """The web ACL exists only with EnableWaf=true on REST, and blocks per IP over the rate."""
    assert expanded["Parameters"]["EnableWaf"]["Default"] == "false"
    acl = expanded["Resources"]["WebAcl"]
    assert acl["Condition"] == "WafOn"
    [rule] = acl["Properties"]["Rules"]
    assert rule["Statement"]["RateBasedStatement"] == {
        "Limit": {"Ref": "WafRateLimit"},
        "AggregateKeyType": "IP",
    }
    assert "Block" in rule["Action"]
    assert expanded["Resources"]["WebAclAssociation"]["Condition"] == "WafOn"


def test_functions_run_python_312_with_reserved_concurrency_and_a_dlq(expanded: dict[str, Any]) -> None:
    """Each function: python3.12, bounded concurrency, SQS DLQ; the event rule dead-letters too."""
    functions = _of_type(expanded, "AWS::Lambda::Function")
    assert set(functions) == {"RestFunction", "HttpFunction", "OutcomeFunction"}
    dlq = {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    for name, function in functions.items():
        props = function["Properties"]
        assert props["Runtime"] == "python3.12"
        assert props["DeadLetterConfig"] == {"TargetArn": dlq}
        assert props["ReservedConcurrentExecutions"] == (
            2 if name == "OutcomeFunction" else {"Ref": "ReservedConcurrency"}
        )
        assert props["Role"] == {"Fn::GetAtt": ["ExecutionRole", "Arn"]}
        assert props["LoggingConfig"]["LogGroup"] == {"Ref": "FunctionLogGroup"}
        assert "DEAD_LETTER" in json.dumps(props["Environment"]["Variables"])
    rule = expanded["Resources"]["OutcomeFunctionExecutionStateChange"]["Properties"]
    assert rule["Targets"][0]["DeadLetterConfig"] == {"Arn": dlq}
    assert set(rule["EventPattern"]["detail"]["state"]) >= {"FAILED", "SUCCEEDED", "SUPERSEDED"}


def test_handlers_named_in_the_template_exist() -> None:
    """The Handler strings resolve to callables in the package."""
    from triggergate.aws import lambda_handler

    text = TEMPLATE.read_text()
    for name in ("handler", "events_handler"):
        assert f"Handler: triggergate.aws.lambda_handler.{name}\n" in text
        assert callable(getattr(lambda_handler, name))


def test_one_role_with_exactly_the_expected_actions_on_named_resources(expanded: dict[str, Any]) -> None:
    """One execution role; every action is expected, none is a wildcard, none on resource "*"."""
    assert list(_of_type(expanded, "AWS::IAM::Role")) == ["ExecutionRole"]
    assert _of_type(expanded, "AWS::IAM::Policy") == {}
    seen: set[str] = set()
    for statement in _statements(expanded):
        assert statement["Effect"] == "Allow"
        for action in _as_list(statement["Action"]):
            assert "*" not in action
            assert action in EXPECTED_ACTIONS
            seen.add(action)
            resources = _as_list(statement["Resource"])
            assert "*" not in resources
            assert all(EXPECTED_ACTIONS[action] in json.dumps(r) for r in resources), (action, resources)
    assert seen == set(EXPECTED_ACTIONS)


def test_queue_policy_lets_only_the_event_rule_dead_letter(expanded: dict[str, Any]) -> None:
    """The SQS policy admits events.amazonaws.com, for SendMessage, from the outcome rule only."""
    [policy] = _of_type(expanded, "AWS::SQS::QueuePolicy").values()
    [statement] = policy["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert "OutcomeFunctionExecutionStateChange" in json.dumps(statement["Condition"])


def test_alarms_cover_errors_throttles_dlq_depth_and_budget(expanded: dict[str, Any]) -> None:
    """Four kinds of alarm exist, and every alarm notifies the alert topic."""
    alarms = _of_type(expanded, "AWS::CloudWatch::Alarm").values()
    metrics = {a["Properties"]["MetricName"] for a in alarms}
    assert metrics == {"Errors", "Throttles", "ApproximateNumberOfMessagesVisible", "BudgetExhausted"}
    assert all(a["Properties"]["AlarmActions"] == [{"Ref": "AlertTopic"}] for a in alarms)
    [metric_filter] = _of_type(expanded, "AWS::Logs::MetricFilter").values()
    assert "budget_exhausted" in metric_filter["Properties"]["FilterPattern"]


def test_optional_email_subscription_and_invoke_url_output(expanded: dict[str, Any]) -> None:
    """The e-mail subscription depends on AlertEmail; the invoke URL is an output."""
    assert expanded["Resources"]["AlertEmailSubscription"]["Condition"] == "HasEmail"
    assert "InvokeUrl" in expanded["Outputs"]
    assert expanded["Resources"]["FunctionLogGroup"]["Properties"]["RetentionInDays"] == {
        "Ref": "LogRetentionDays"
    }
