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

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "aws" / "template.yaml"
DOCS = ROOT / "docs" / "aws.md"
TABLES = ("TriggerTable", "AuditTable")
STREAM = ("TriggerTable", "/stream/*")
SECRETS = ("AdminTokenParameter", "KeySecretParameter")
# The execution role: exactly the API calls the adapters and the stream trigger make
# (tests/aws/test_dynamodb.py checks the store's), each on the resources named here.
EXPECTED_ACTIONS: dict[str, tuple[str, ...]] = {
    "logs:CreateLogStream": ("FunctionLogGroup",),
    "logs:PutLogEvents": ("FunctionLogGroup",),
    "dynamodb:GetItem": TABLES,
    "dynamodb:PutItem": TABLES,
    "dynamodb:UpdateItem": TABLES,
    "dynamodb:DeleteItem": TABLES,
    "dynamodb:Query": TABLES,
    "dynamodb:DescribeStream": STREAM,
    "dynamodb:GetRecords": STREAM,
    "dynamodb:GetShardIterator": STREAM,
    "dynamodb:ListStreams": STREAM,
    "codepipeline:StartPipelineExecution": ("PipelineName",),
    "codepipeline:GetPipelineExecution": ("PipelineName",),
    "codepipeline:ListPipelineExecutions": ("PipelineName",),
    "codepipeline:GetPipeline": ("PipelineName",),
    "sns:Publish": ("AlertTopic",),
    "sqs:SendMessage": ("DeadLetterQueue",),
    "ssm:GetParameter": SECRETS,
}
# AWS's managed policy AmazonAPIGatewayPushToCloudWatchLogs, which the REST API's log role copies.
API_GATEWAY_LOG_ACTIONS = {
    "logs:CreateLogGroup",
    "logs:CreateLogStream",
    "logs:DescribeLogGroups",
    "logs:DescribeLogStreams",
    "logs:PutLogEvents",
    "logs:GetLogEvents",
    "logs:FilterLogEvents",
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


def _branches(value: Any) -> list[Any]:
    """A value, or both outcomes of an ``Fn::If`` (without ``AWS::NoValue``), flattened."""
    if isinstance(value, dict) and "Fn::If" in value:
        return [v for branch in value["Fn::If"][1:] for v in _branches(branch)]
    if value == {"Ref": "AWS::NoValue"}:
        return []
    return [value]


def _statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    policies = [p for entry in role["Properties"].get("Policies", []) for p in _branches(entry)]
    return [s for p in policies for s in p["PolicyDocument"]["Statement"]]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _resources(statement: dict[str, Any]) -> list[Any]:
    return [r for entry in _as_list(statement["Resource"]) for r in _branches(entry)]


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
        url = function["Properties"]["Environment"]["Variables"]["TRIGGERGATE_STORE"]
        for branch in _branches(url):
            assert f"?ttl_attribute={TTL_ATTRIBUTE}" in branch["Fn::Sub"]


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


def test_functions_run_python_312_with_a_dlq_and_no_platform_log_lines(expanded: dict[str, Any]) -> None:
    """Each function: python3.12, SQS DLQ, its log group in JSON without the platform's per-
    invocation START/END/REPORT lines (INFO); the event rule dead-letters too."""
    functions = _of_type(expanded, "AWS::Lambda::Function")
    assert set(functions) == {"RestFunction", "HttpFunction", "OutcomeFunction"}
    dlq = {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    for function in functions.values():
        props = function["Properties"]
        assert props["Runtime"] == "python3.12"
        assert props["DeadLetterConfig"] == {"TargetArn": dlq}
        assert props["Role"] == {"Fn::GetAtt": ["ExecutionRole", "Arn"]}
        assert props["LoggingConfig"] == {
            "LogGroup": {"Ref": "FunctionLogGroup"},
            "LogFormat": "JSON",
            "SystemLogLevel": "WARN",
            "ApplicationLogLevel": "INFO",
        }
        assert props["MemorySize"] == {"Ref": "MemorySize"}
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


def test_one_execution_role_with_exactly_the_expected_actions_on_named_resources(
    expanded: dict[str, Any],
) -> None:
    """One role for every function; every action is expected, none is a wildcard, each on one
    of the resources it is meant for, never on "*"."""
    roles = _of_type(expanded, "AWS::IAM::Role")
    assert set(roles) == {"ExecutionRole", "ApiGatewayCloudWatchRole"}
    assert _of_type(expanded, "AWS::IAM::Policy") == {}
    seen: set[str] = set()
    for statement in _statements(roles["ExecutionRole"]):
        assert statement["Effect"] == "Allow"
        for action in _as_list(statement["Action"]):
            assert "*" not in action
            assert action in EXPECTED_ACTIONS
            seen.add(action)
            resources = _resources(statement)
            assert resources and "*" not in resources
            for resource in resources:
                text = json.dumps(resource)
                assert any(name in text for name in EXPECTED_ACTIONS[action]), (action, resource)
                if EXPECTED_ACTIONS[action] == STREAM:
                    assert text.endswith('/stream/*"}'), resource
    assert seen == set(EXPECTED_ACTIONS)


def test_rest_api_log_role_may_only_write_this_regions_logs(expanded: dict[str, Any]) -> None:
    """REST access logs go through the region's API Gateway account role: trusted by API
    Gateway only, AWS's push-to-CloudWatch actions, on this account's and region's log groups;
    created before the API (its stage needs it) and kept on delete (other APIs may use it)."""
    role = expanded["Resources"]["ApiGatewayCloudWatchRole"]
    assert role["Condition"] == "IsRest"
    [trust] = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "apigateway.amazonaws.com"}
    [statement] = _statements(role)
    assert set(statement["Action"]) == API_GATEWAY_LOG_ACTIONS
    assert statement["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:*"
    }
    account = expanded["Resources"]["ApiGatewayAccount"]
    assert account["Properties"]["CloudWatchRoleArn"] == {"Fn::GetAtt": ["ApiGatewayCloudWatchRole", "Arn"]}
    assert account["DeletionPolicy"] == role["DeletionPolicy"] == "Retain"
    assert expanded["Resources"]["RestApi"]["DependsOn"] == "ApiGatewayAccount"


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


def _variables(expanded: dict[str, Any], function: str = "RestFunction") -> dict[str, Any]:
    found: dict[str, Any] = expanded["Resources"][function]["Properties"]["Environment"]["Variables"]
    return found


def test_reserved_concurrency_is_a_parameter_unset_by_default(expanded: dict[str, Any]) -> None:
    """A new account (concurrency quota 10) cannot reserve any: the default reserves none, and
    the API functions reserve only when the parameter is set; the outcome function never does."""
    assert expanded["Parameters"]["ReservedConcurrency"]["Default"] == ""
    assert expanded["Conditions"]["HasReservedConcurrency"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "ReservedConcurrency"}, ""]}]
    }
    for name in ("RestFunction", "HttpFunction"):
        assert expanded["Resources"][name]["Properties"]["ReservedConcurrentExecutions"] == {
            "Fn::If": ["HasReservedConcurrency", {"Ref": "ReservedConcurrency"}, {"Ref": "AWS::NoValue"}]
        }
    assert "ReservedConcurrentExecutions" not in expanded["Resources"]["OutcomeFunction"]["Properties"]


def test_request_variable_defaults_to_a_correlation_variable(expanded: dict[str, Any]) -> None:
    """Uncertain starts can be looked up by default: the pipeline URL passes the request id in
    a variable named by the parameter, whose default is not empty."""
    assert expanded["Parameters"]["RequestVariable"]["Default"] == "TRIGGERGATE_REQUEST_ID"
    url = _variables(expanded)["TRIGGERGATE_PIPELINE"]["Fn::Sub"]
    assert url == "codepipeline://${PipelineName}?request_variable=${RequestVariable}"


def test_a_separate_audit_table_is_created_granted_and_used_only_when_chosen(
    expanded: dict[str, Any],
) -> None:
    """SeparateAuditTable=true creates a second table with the store's keys and indexes, names
    it in the store URL and grants the table actions on it; off by default."""
    assert expanded["Parameters"]["SeparateAuditTable"]["Default"] == "false"
    table = expanded["Resources"]["AuditTable"]
    assert table["Condition"] == "SeparateAudit"
    assert table["DeletionPolicy"] == "Retain"
    assert table["Properties"]["KeySchema"] == [{"AttributeName": schema.PK, "KeyType": "HASH"}]
    assert table["Properties"]["GlobalSecondaryIndexes"] == schema.INDEXES
    assert table["Properties"]["TimeToLiveSpecification"] == {"AttributeName": TTL_ATTRIBUTE, "Enabled": True}
    store = _variables(expanded)["TRIGGERGATE_STORE"]["Fn::If"]
    assert store[0] == "SeparateAudit"
    assert store[1] == {"Fn::Sub": "dynamodb://${TriggerTable}?ttl_attribute=ttl&audit_table=${AuditTable}"}
    assert store[2] == {"Fn::Sub": "dynamodb://${TriggerTable}?ttl_attribute=ttl"}
    granted = [
        r
        for s in _statements(expanded["Resources"]["ExecutionRole"])
        if "dynamodb:PutItem" in _as_list(s["Action"])
        for r in _as_list(s["Resource"])
    ]
    audit = {"Fn::GetAtt": ["AuditTable", "Arn"]}
    assert {"Fn::If": ["SeparateAudit", audit, {"Ref": "AWS::NoValue"}]} in granted


def _access_log(fmt: str) -> dict[str, str]:
    """The access log line a request would produce, with each $context variable named."""
    parsed: dict[str, str] = json.loads(fmt)
    return parsed


def test_both_apis_write_a_json_access_log_with_the_refusal_reason(expanded: dict[str, Any]) -> None:
    """REST and HTTP stages log one JSON line per request (request id, source IP, status,
    latency, why API Gateway refused it; WAF's verdict on REST) to a log group of their own,
    kept as long as the function logs."""
    group = expanded["Resources"]["ApiAccessLogGroup"]["Properties"]
    assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    prefix = "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:"
    arn = {"Fn::Sub": prefix + "${ApiAccessLogGroup}"}
    [rest] = _of_type(expanded, "AWS::ApiGateway::Stage").values()
    [http] = _of_type(expanded, "AWS::ApiGatewayV2::Stage").values()
    common = {
        "$context.requestId",
        "$context.identity.sourceIp",
        "$context.status",
        "$context.responseLatency",
        "$context.error.responseType",
    }
    for settings, extra in (
        (rest["Properties"]["AccessLogSetting"], {"$context.wafResponseCode", "$context.waf.error"}),
        (http["Properties"]["AccessLogSettings"], set()),
    ):
        assert settings["DestinationArn"] == arn
        assert set(_access_log(settings["Format"]).values()) >= common | extra


def test_new_outbox_items_invoke_the_outcome_function_through_the_table_stream(
    expanded: dict[str, Any],
) -> None:
    """The table streams keys; the outcome function's mapping passes only INSERTs of outbox
    items (the keys the store writes), retries twice, then sends the batch to the DLQ."""
    from triggergate.stores.dynamodb_items import outbox_pk

    table = expanded["Resources"]["TriggerTable"]["Properties"]
    assert table["StreamSpecification"] == {"StreamViewType": "KEYS_ONLY"}
    [mapping] = _of_type(expanded, "AWS::Lambda::EventSourceMapping").values()
    props = mapping["Properties"]
    assert props["FunctionName"] == {"Ref": "OutcomeFunction"}
    assert props["EventSourceArn"] == {"Fn::GetAtt": ["TriggerTable", "StreamArn"]}
    assert props["MaximumRetryAttempts"] == 2
    dlq = {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    assert props["DestinationConfig"]["OnFailure"]["Destination"] == dlq
    [pattern] = [json.loads(f["Pattern"]) for f in props["FilterCriteria"]["Filters"]]
    assert pattern["eventName"] == ["INSERT"]
    [match] = pattern["dynamodb"]["Keys"]["pk"]["S"]
    prefix = match["prefix"]
    assert outbox_pk("x").startswith(prefix) and not "q#x".startswith(prefix)


def test_secrets_come_from_named_parameters_readable_only_by_name(expanded: dict[str, Any]) -> None:
    """The admin token and key secret are read from the Parameter Store names given (at init);
    the role may GetParameter exactly those, and only when one is given."""
    variables = _variables(expanded)
    assert variables["TRIGGERGATE_ADMIN_TOKEN_SSM"] == {"Ref": "AdminTokenParameter"}
    assert variables["TRIGGERGATE_KEY_SECRET_SSM"] == {"Ref": "KeySecretParameter"}
    assert "TRIGGERGATE_ADMIN_TOKEN" not in variables and "TRIGGERGATE_KEY_SECRET" not in variables
    [entry] = [p for p in expanded["Resources"]["ExecutionRole"]["Properties"]["Policies"] if "Fn::If" in p]
    condition, policy, absent = entry["Fn::If"]
    assert (condition, absent) == ("HasSecrets", {"Ref": "AWS::NoValue"})
    [statement] = policy["PolicyDocument"]["Statement"]
    assert statement["Action"] == "ssm:GetParameter"
    prefix = "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter"
    assert statement["Resource"] == [
        {"Fn::If": [has, {"Fn::Sub": f"{prefix}${{{name}}}"}, {"Ref": "AWS::NoValue"}]}
        for has, name in (("HasAdminToken", "AdminTokenParameter"), ("HasKeySecret", "KeySecretParameter"))
    ]


def test_the_build_installs_the_pinned_versions_and_the_sam_cli_has_its_own_environment() -> None:
    """The function's build installs with constraints.txt; `make deploy-aws` installs the SAM
    CLI into .venv-sam from its own exact pins, and builds with that environment's Python."""
    build = (ROOT / "deploy" / "aws" / "Makefile").read_text()
    assert "-c $(ROOT)/constraints.txt" in build
    root = (ROOT / "Makefile").read_text()
    assert "deploy-aws: sam-cli" in root
    assert "-c deploy/aws/sam-cli-constraints.txt aws-sam-cli" in root
    pins = (ROOT / "deploy" / "aws" / "sam-cli-constraints.txt").read_text().splitlines()
    assert any(line.startswith("aws-sam-cli==") for line in pins)
    assert all("==" in line for line in pins if line and not line.startswith("#"))


def test_docs_list_every_parameter_with_its_default(expanded: dict[str, Any]) -> None:
    """docs/aws.md's parameter table names each template parameter and its default as the
    template has it (no parameter undocumented, none documented that is gone)."""
    import re

    documented = dict(re.findall(r"^\| `(\w+)` \[([^\]]*)\]", DOCS.read_text(), re.M))
    documented.update(dict.fromkeys(re.findall(r"^\| `(\w+)` \|", DOCS.read_text(), re.M), None))
    parameters = expanded["Parameters"]
    assert set(documented) == set(parameters)
    for name, default in documented.items():
        expected = parameters[name].get("Default")
        assert default == (None if expected is None else str(expected).strip('"')), name


def test_checkov_finds_nothing_on_the_expanded_template(expanded: dict[str, Any], tmp_path: Path) -> None:
    """checkov's CloudFormation checks (run offline on the SAM expansion) pass, apart from the
    skips each resource documents and two stage checks that would only add cost (X-Ray
    tracing, a response cache: every answer here is per client and must not be cached)."""
    from tests.servers._process import require_binary

    checkov = ROOT / ".venv-tools" / "bin" / "checkov"
    assert checkov.is_file(), "checkov is missing: run `make tools` (make test does)"
    unshare = require_binary("unshare")
    document = tmp_path / "expanded.json"
    document.write_text(json.dumps(expanded))
    # No network at all (a namespace of its own) and --skip-download: checkov otherwise fetches
    # its guidelines from its vendor's service.
    skips = "CKV_AWS_73,CKV_AWS_120"
    args = ["--framework", "cloudformation", "-f", str(document), "--skip-download", "--skip-check", skips]
    done = subprocess.run(
        [unshare, "--net", str(checkov), *args, "-o", "json", "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = json.loads(done.stdout)
    failed = [(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]]
    assert failed == [], failed
    assert report["summary"]["passed"] > 30  # the checks ran at all
