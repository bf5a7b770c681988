"""The Faregate callback for LiteLLM (deploy/integrations/litellm/faregate_callback.py) against a
stand-in Faregate on loopback (port 0): Faregate's refusal passed on, the fail modes when
Faregate cannot be asked, the token mapping, and a failed batch sent again, the same records,
within the attempt bound. Run by tests/tests/litellm.rs in the LiteLLM venv, with the callback's
folder on PYTHONPATH; every wait has a deadline."""

import asyncio
import json
import os
import socket
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

os.environ.setdefault("FAREGATE_URL", "http://127.0.0.1:9")  # replaced per test; never asked
os.environ.setdefault("FAREGATE_COLLECTOR_TOKEN", "test-token")

import faregate_callback  # noqa: E402
from fastapi import HTTPException  # noqa: E402


class StandIn:
    """A stand-in Faregate: `/v1/check` answers `check`; `/v1/usage` answers the next of
    `usage_statuses` (the last repeats) and keeps every batch it was sent."""

    def __init__(self, check=(200, "", {}), usage_statuses=(202,)):
        self.check, self.usage_statuses, self.batches, self.check_headers = check, list(usage_statuses), [], []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, status, body, headers):
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                stand_in.check_headers.append(dict(self.headers))
                self.answer(*stand_in.check)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                stand_in.batches.append((self.headers["authorization"], body["records"]))
                status = stand_in.usage_statuses.pop(0) if len(stand_in.usage_statuses) > 1 else stand_in.usage_statuses[0]
                self.answer(status, {"accepted": len(body["records"])} if status == 202 else {"error": {"message": "x"}}, {})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def callback(url, **settings):
    env = {"FAREGATE_URL": url, "FAREGATE_COLLECTOR_TOKEN": "test-token", "FAREGATE_FLUSH_SECS": "0.05", **settings}
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        return faregate_callback.FaregateCallback()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


KEY = SimpleNamespace(
    org_id="acme", team_id="infra", user_id="bo", key_alias=None, token="h" * 64, project_id=None,
    request_route="/v1/chat/completions",
)


def success_kwargs(call_id, provider, model, usage):
    metadata = {"user_api_key_org_id": "acme", "user_api_key_team_id": "infra", "user_api_key_user_id": "ana",
                "user_api_key_hash": "h" * 64, "usage_object": usage}
    payload = {"litellm_call_id": call_id, "custom_llm_provider": provider, "model": f"{provider}/{model}",
               "call_type": "acompletion", "stream": False, "startTime": time.time(), "response_time": 0.25,
               "metadata": metadata, "messages": [{"role": "user", "content": "a secret prompt"}]}
    return {"standard_logging_object": payload, "litellm_call_id": call_id}


async def until(what, condition, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {seconds} s")
        await asyncio.sleep(0.02)


def unreachable_url():
    """An address nothing answers: a port this test holds bound, never listening."""
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    return held, f"http://127.0.0.1:{held.getsockname()[1]}"


class Enforcement(unittest.TestCase):
    def test_a_refusal_is_passed_on_with_faregate_status_message_and_retry_hint(self):
        body = {"error": {"type": "insufficient_quota", "code": "insufficient_quota", "message": "Bo daily: $0.06 spent of $0.05"}}
        stand_in = StandIn(check=(429, body, {"content-type": "application/json", "x-should-retry": "false"}))
        self.addCleanup(stand_in.close)
        hook = callback(stand_in.url).async_pre_call_hook(KEY, None, {"model": "openai/gpt-5", "litellm_call_id": "c1"}, "acompletion")
        with self.assertRaises(HTTPException) as refused:
            asyncio.run(hook)
        self.assertEqual(refused.exception.status_code, 429)
        self.assertEqual(refused.exception.detail["error"]["message"], "Bo daily: $0.06 spent of $0.05")
        self.assertEqual(refused.exception.headers, {"x-should-retry": "false"})
        asked = {name.lower(): value for name, value in stand_in.check_headers[0].items()}
        self.assertEqual(
            {name: asked.get(name) for name in ("x-faregate-org", "x-faregate-team", "x-faregate-user", "x-faregate-key", "x-faregate-model", "x-forwarded-uri")},
            {"x-faregate-org": "acme", "x-faregate-team": "infra", "x-faregate-user": "bo", "x-faregate-key": "h" * 64,
             "x-faregate-model": "gpt-5", "x-forwarded-uri": "/v1/chat/completions"},
        )

    def test_unreachable_faregate_fails_open_by_default_and_closed_when_asked(self):
        held, url = unreachable_url()
        self.addCleanup(held.close)
        with self.assertLogs("faregate", "WARNING"):
            self.assertIsNone(asyncio.run(callback(url).async_pre_call_hook(KEY, None, {"model": "gpt-5"}, "acompletion")))
        with self.assertRaises(HTTPException) as refused, self.assertLogs("faregate", "WARNING"):
            asyncio.run(callback(url, FAREGATE_FAIL_MODE="closed").async_pre_call_hook(KEY, None, {"model": "gpt-5"}, "acompletion"))
        self.assertEqual(refused.exception.status_code, 503)

    def test_an_answer_that_is_not_faregates_applies_the_fail_mode(self):
        stand_in = StandIn(check=(502, "<html>bad gateway</html>", {"content-type": "text/html"}))
        self.addCleanup(stand_in.close)
        with self.assertRaises(HTTPException) as refused, self.assertLogs("faregate", "WARNING"):
            asyncio.run(callback(stand_in.url, FAREGATE_FAIL_MODE="closed").async_pre_call_hook(KEY, None, {}, "acompletion"))
        self.assertEqual(refused.exception.status_code, 503)


ANTHROPIC_USAGE = {  # LiteLLM's usage of an Anthropic answer: prompt_tokens counts the cache
    "prompt_tokens": 2270, "completion_tokens": 30,
    "prompt_tokens_details": {"cached_tokens": 1000, "cache_creation_tokens": 70,
                              "cache_creation_token_details": {"ephemeral_5m_input_tokens": 50, "ephemeral_1h_input_tokens": 20}},
    "completion_tokens_details": {"reasoning_tokens": 0},
    "cache_creation_input_tokens": 70, "cache_read_input_tokens": 1000, "service_tier": "standard",
}
OPENAI_USAGE = {"prompt_tokens": 1000, "completion_tokens": 65, "prompt_tokens_details": {"cached_tokens": 300},
                "completion_tokens_details": {"reasoning_tokens": 25}}


class Metering(unittest.TestCase):
    def test_a_failed_batch_is_sent_again_the_same_records_and_tokens_are_disjoint(self):
        stand_in = StandIn(usage_statuses=(503, 202))
        self.addCleanup(stand_in.close)
        meter = callback(stand_in.url)

        async def run():
            meter._meter(success_kwargs("call-a", "anthropic", "claude-sonnet-4-5", ANTHROPIC_USAGE), None, "success")
            meter._meter(success_kwargs("call-b", "openai", "gpt-5", OPENAI_USAGE), None, "success")
            await until("the batch is sent twice", lambda: len(stand_in.batches) >= 2 and not meter.in_flight)

        with self.assertLogs("faregate", "WARNING"):
            asyncio.run(run())
        (token, first), (_, second) = stand_in.batches[:2]
        self.assertEqual(token, "Bearer test-token")
        self.assertEqual(first, second, "the same batch, the same event ids")
        self.assertEqual(len(first), 2)
        self.assertEqual(first[0]["tokens"], {"input": 1200, "output": 30, "cache_read": 1000, "cache_write_5m": 50,
                                              "cache_write_1h": 20, "reasoning": 0})
        self.assertEqual(first[1]["tokens"], {"input": 700, "output": 40, "cache_read": 300, "cache_write_5m": 0,
                                              "cache_write_1h": 0, "reasoning": 25})
        self.assertEqual((first[0]["provider"], first[0]["model"], first[0]["user"]), ("anthropic", "claude-sonnet-4-5", "ana"))
        self.assertNotIn("secret", json.dumps(first), "no prompt in a record")
        again = meter._record(success_kwargs("call-a", "anthropic", "claude-sonnet-4-5", ANTHROPIC_USAGE), None, "success")
        self.assertEqual(again["event_id"], first[0]["event_id"], "a repeated log of a call has its event id")

    def test_attempts_are_bounded_and_the_records_given_up_are_logged(self):
        stand_in = StandIn(usage_statuses=(503,))
        self.addCleanup(stand_in.close)
        meter = callback(stand_in.url, FAREGATE_SEND_ATTEMPTS="2")

        async def run():
            meter._meter(success_kwargs("call-c", "openai", "gpt-5", OPENAI_USAGE), None, "success")
            await until("the records are given up", lambda: not meter.queue and not meter.in_flight and stand_in.batches)

        with self.assertLogs("faregate", "WARNING") as logged:
            asyncio.run(run())
        self.assertEqual(len(stand_in.batches), 2, "two attempts, no more")
        given_up = [line for line in logged.output if "giving up" in line]
        self.assertEqual(len(given_up), 1, logged.output)
        self.assertIn(stand_in.batches[0][1][0]["event_id"], given_up[0], "the record is in the log")

    def test_a_call_refused_before_any_provider_is_not_metered(self):
        meter = callback("http://127.0.0.1:9")
        meter._remember_refused("call-d")
        refused = success_kwargs("call-d", "openai", "gpt-5", OPENAI_USAGE)
        self.assertIsNone(meter._record(refused, None, "failure"))
        never_called = {"standard_logging_object": {"litellm_call_id": "call-e", "custom_llm_provider": None,
                                                    "error_information": {"llm_provider": "", "error_code": "401"}}}
        self.assertIsNone(meter._record(never_called, None, "failure"))


if __name__ == "__main__":
    unittest.main()
