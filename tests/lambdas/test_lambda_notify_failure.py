"""NotifyFailure: a readable SNS message with state, error, cause and the console link."""

from __future__ import annotations

import json

import pytest
from lambda_harness import event, load_handler

from codetune.workflow import AwsRequestFailed, InvalidEvent
from codetune.workflow.aws import client

handler = load_handler("notify_failure")


@pytest.fixture
def topic(aws, monkeypatch):
    arn = client("sns").create_topic(Name="codetune-test-failures")["TopicArn"]
    client("sqs").create_queue(QueueName="inbox")
    q = client("sqs").get_queue_url(QueueName="inbox")["QueueUrl"]
    qarn = client("sqs").get_queue_attributes(QueueUrl=q, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    client("sns").subscribe(TopicArn=arn, Protocol="sqs", Endpoint=qarn)
    monkeypatch.setenv("TOPIC_ARN", arn)
    return q


def test_publishes_readable_message(topic, context):
    # guards: the message says state, error, the Lambda's errorMessage (not raw JSON), and a link
    out = handler.lambda_handler(event("notify_failure"), context)
    assert out["subject"].startswith(
        "codetune run nightly-payments-2026-11-22 failed at TrainAdapter"
    )
    msgs = client("sqs").receive_message(QueueUrl=topic)["Messages"]
    body = json.loads(msgs[0]["Body"])["Message"]
    assert "State: TrainAdapter" in body
    assert "Cause: sagemaker:CreateTrainingJob: ResourceLimitExceeded" in body
    assert "errorType" not in body
    assert "states/home?region=us-east-1#/v2/executions/details/arn:aws:states" in body


def test_missing_topic_is_terminal(aws, context, monkeypatch):
    # guards: SNS errors are not swallowed: a wrong topic is a typed terminal error
    monkeypatch.setenv("TOPIC_ARN", "arn:aws:sns:us-east-1:123456789012:nope")
    with pytest.raises(AwsRequestFailed, match="sns:Publish"):
        handler.lambda_handler(event("notify_failure"), context)


def test_event_without_error_is_invalid_event(aws, context, monkeypatch):
    # guards: malformed event names the field
    monkeypatch.setenv("TOPIC_ARN", "arn:aws:sns:us-east-1:123456789012:t")
    ev = event("notify_failure")
    del ev["error"]
    with pytest.raises(InvalidEvent, match=r"event\.error is missing"):
        handler.lambda_handler(ev, context)
