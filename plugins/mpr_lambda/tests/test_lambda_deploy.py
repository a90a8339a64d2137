"""deploy/aws: cfn-lint passes on the SAM template and on the state machine definition; the
template, the ASL and the handlers agree; IAM stays least-privilege."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml
from cfnlint.api import ManualArgs, lint, lint_file

sys.path.insert(0, str(Path(__file__).parent))
from asl_player import _CfnLoader, handlers_from_template

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "aws"
TEMPLATE = DEPLOY / "template.yaml"
ASL = DEPLOY / "statemachine.asl.json"
LINT = ManualArgs(regions=["us-east-1"])


def template() -> dict:
    return yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)


def placeholders() -> set[str]:
    return set(re.findall(r"\$\{(\w+)\}", ASL.read_text()))


def _plain_cfn(definition: dict) -> str:
    """The definition in a plain AWS::StepFunctions::StateMachine, whose Definition cfn-lint validates (E3601)."""
    subs = {p: f"arn:aws:lambda:us-east-1:123456789012:function:{p}" for p in placeholders()}
    resource = {
        "Type": "AWS::StepFunctions::StateMachine",
        "Properties": {
            "RoleArn": "arn:aws:iam::123456789012:role/mpr-sfn",
            "Definition": definition,
            "DefinitionSubstitutions": subs,
        },
    }
    return json.dumps({"AWSTemplateFormatVersion": "2010-09-09", "Resources": {"Machine": resource}})


def test_cfn_lint_passes_on_the_sam_template() -> None:
    assert lint_file(TEMPLATE, config=LINT) == []


def test_cfn_lint_passes_on_the_state_machine_definition() -> None:
    definition = json.loads(ASL.read_text())
    assert lint(_plain_cfn(definition), config=LINT) == []
    broken = json.loads(ASL.read_text())
    broken["States"]["Encode"]["MaxConcurrency"] = "lots"
    assert any(m.rule.id == "E3601" for m in lint(_plain_cfn(broken), config=LINT))  # the check is live


def test_every_next_and_catch_target_exists() -> None:
    def check(machine: dict) -> None:
        states = machine["States"]
        assert machine["StartAt"] in states
        for name, state in states.items():
            targets = [state.get("Next")] + [c["Next"] for c in state.get("Catch", [])]
            for target in filter(None, targets):
                assert target in states, f"{name} → {target}"
            if state["Type"] in ("Task", "Map"):
                assert state.get("End") or state.get("Next"), name
            if state["Type"] == "Map":
                check(state["ItemProcessor"])

    check(json.loads(ASL.read_text()))


def test_template_substitutes_every_asl_placeholder_with_a_real_handler() -> None:
    machine = next(r for r in template()["Resources"].values() if r["Type"] == "AWS::Serverless::StateMachine")[
        "Properties"
    ]
    assert machine["DefinitionUri"] == ASL.name
    assert set(machine["DefinitionSubstitutions"]) == placeholders()
    handlers = handlers_from_template(TEMPLATE)
    from mpr_lambda import handler

    assert {f.__name__ for f in handlers.values()} == {"plan", "encode_chunk", "concat", "callback", "failure"}
    assert all(getattr(handler, f.__name__) is f for f in handlers.values())


def test_functions_fit_lambda_limits_and_use_the_ffmpeg_layer() -> None:
    t = template()
    assert t["Globals"]["Function"]["Layers"] == [{"Ref": "FfmpegLayer"}]
    assert t["Globals"]["Function"]["Environment"]["Variables"]["MPR_FFMPEG"] == "/opt/bin/ffmpeg"
    functions = {k: v["Properties"] for k, v in t["Resources"].items() if v["Type"] == "AWS::Serverless::Function"}
    assert len(functions) == 5
    for name, props in functions.items():
        assert props["Timeout"] <= 900, name
    assert functions["EncodeChunkFunction"]["Timeout"] == 900
    from mpr_lambda.settings import LambdaSettings

    # chunks are planned to take at most half of the timeout at the slowest speed we plan for
    s = LambdaSettings()
    assert s.timeout * 0.5 * s.min_speed < functions["EncodeChunkFunction"]["Timeout"]


def _statements(policies: list) -> list[dict]:
    out = []
    for p in policies:
        out += p.get("Statement", []) if isinstance(p, dict) else []
    return out


def test_iam_is_least_privilege() -> None:
    resources = template()["Resources"]
    for name, res in resources.items():
        props = res.get("Properties", {})
        statements = _statements(props.get("Policies", []))
        if res["Type"] == "AWS::IAM::ManagedPolicy":
            statements = props["PolicyDocument"]["Statement"]
        for st in statements:
            actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
            assert all("*" not in a for a in actions), (name, actions)
            assert st["Resource"] != "*", name
            assert st["Effect"] == "Allow"
    # the encoder writes only chunk files, never final outputs
    encode = _statements(resources["EncodeChunkFunction"]["Properties"]["Policies"])
    puts = [s for s in encode if "s3:PutObject" in s["Action"]]
    assert puts and all(s["Resource"] == {"Sub": "${OutputBucket.Arn}/mpr-work/*"} for s in puts)
    # the callback functions read only their SSM parameter; the state machine only invokes its Lambdas
    for fn in ("CallbackFunction", "FailureFunction"):
        assert resources[fn]["Properties"]["Policies"] == [
            {"SSMParameterReadPolicy": {"ParameterName": {"Ref": "CallbackSecretParameterName"}}}
        ]
    sm_policies = resources["TranscodeStateMachine"]["Properties"]["Policies"]
    assert all(list(p) == ["LambdaInvokePolicy"] for p in sm_policies) and len(sm_policies) == 5


# What the Lambda Python runtime already has (boto3 and its dependencies; botocore uses
# certifi only when it is installed and otherwise its own CA bundle).
LAMBDA_RUNTIME = {"boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six", "certifi"}
# import name -> distribution, for the libraries build.sh installs
DISTRIBUTIONS = {"av": "av", "ffmpeg": "ffmpeg-python", "future": "future", "past": "future", "pluggy": "pluggy"}


def test_build_script_packages_everything_the_handlers_import() -> None:
    import subprocess

    code = (
        "import sys; import mpr_lambda.handler, mpr_storage_s3.storage, mpr_storage_s3.settings;"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    third_party = {m for m in out if not m.startswith("_") and m not in ("cython_runtime",)}
    ours = {m for m in third_party if m == "mpr" or m.startswith("mpr_")}
    assert ours == {"mpr", "mpr_lambda", "mpr_storage_s3"}
    needed = third_party - ours - LAMBDA_RUNTIME
    assert needed <= set(DISTRIBUTIONS), f"build.sh does not know how to package {needed - set(DISTRIBUTIONS)}"
    build = (DEPLOY / "build.sh").read_text()
    wheels = re.search(r"--only-binary=:all: ([a-z0-9 -]+)\n", build).group(1).split()
    assert {DISTRIBUTIONS[m] for m in needed} <= set(wheels)
    for path in ('"$ROOT"', '"$ROOT/plugins/mpr_storage_s3"', '"$ROOT/plugins/mpr_lambda"'):
        assert path in build
    assert "imageio-ffmpeg" in build and "layer/bin/ffmpeg" in build  # the layer's /opt/bin/ffmpeg
