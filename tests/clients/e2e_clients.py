"""Drive the whole chain with the official anthropic and openai SDKs (called by tests/tests/e2e.rs).

Environment: FAREGATE_URL (an ingress, no /v1; several comma-separated are used in turn),
FAREGATE_KEY (a virtual key), MODE, COUNT, FAKE_USAGE. Prints one JSON line per call (flushed),
so the Rust side can follow progress and compare.

Modes:
- mixed: COUNT rounds of four calls (Anthropic messages, Anthropic streaming, OpenAI chat
  streaming, OpenAI Responses), each with its own x-fake-usage header (usage_of(i)).
- until_blocked: Anthropic messages with FAKE_USAGE as fast as possible until the SDK raises
  (or MAX_CALLS succeeded); prints how many succeeded and what was raised.
- blocked: one Anthropic and one OpenAI call, printing what each raised.
- one: one Anthropic call.
"""

import json
import os
import sys
import time

import anthropic
import openai

urls = os.environ["FAREGATE_URL"].split(",")
key = os.environ["FAREGATE_KEY"]
mode = os.environ.get("MODE", "mixed")
count = int(os.environ.get("COUNT", "1"))
fixed_usage = os.environ.get("FAKE_USAGE", "input=100,output=10")
limit = int(os.environ.get("MAX_CALLS", "20000"))
messages = [{"role": "user", "content": "hello"}]
claudes = [anthropic.Anthropic(base_url=u, api_key=key) for u in urls]
gpts = [openai.OpenAI(base_url=u + "/v1", api_key=key) for u in urls]


def emit(call, **fields):
    print(json.dumps({"call": call, **fields}), flush=True)


def usage_of(i):
    """Distinct, deterministic usage for call i (every class named, so no default applies)."""
    return (f"input={100 + (i * 7) % 997},output={10 + i % 50},cache_read={1000 + (i * 13) % 5000},"
            f"cache_write_5m={(i * 3) % 200},cache_write_1h={i % 70},reasoning={i % 40}")


def mixed():
    for r in range(count):
        claude, gpt = claudes[r % len(claudes)], gpts[r % len(gpts)]
        i = 4 * r
        h = {"x-fake-usage": usage_of(i)}
        m = claude.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=messages, extra_headers=h)
        emit("anthropic", i=i, input=m.usage.input_tokens, output=m.usage.output_tokens)
        h = {"x-fake-usage": usage_of(i + 1), "x-claude-code-session-id": f"s-{r}"}
        with claude.messages.stream(model="claude-sonnet-4-5", max_tokens=64, messages=messages,
                                    extra_headers=h) as s:
            final = s.get_final_message()
        emit("anthropic-stream", i=i + 1, input=final.usage.input_tokens, output=final.usage.output_tokens)
        h = {"x-fake-usage": usage_of(i + 2)}
        chunks = list(gpt.chat.completions.create(model="gpt-5", messages=messages, stream=True,
                                                   stream_options={"include_usage": True}, extra_headers=h))
        emit("openai-chat-stream", i=i + 2, prompt=chunks[-1].usage.prompt_tokens)
        h = {"x-fake-usage": usage_of(i + 3)}
        resp = gpts[r % len(gpts)].responses.create(model="gpt-5-codex", input="hello", extra_headers=h)
        emit("openai-responses", i=i + 3, input=resp.usage.input_tokens)


def until_blocked():
    h = {"x-fake-usage": fixed_usage}
    ok, start = 0, time.monotonic()
    while ok < limit:
        claude = claudes[ok % len(claudes)]
        try:
            claude.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=messages, extra_headers=h)
            ok += 1
        except anthropic.APIStatusError as e:
            emit("until_blocked", ok=ok, seconds=time.monotonic() - start, raised=type(e).__name__,
                 status=e.status_code, message=str(e))
            return
    emit("until_blocked", ok=ok, seconds=time.monotonic() - start, raised=None)


def blocked():
    h = {"x-fake-usage": fixed_usage}
    try:
        claudes[0].messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=messages, extra_headers=h)
        emit("anthropic", raised=None)
    except anthropic.APIStatusError as e:
        emit("anthropic", raised=type(e).__name__, status=e.status_code, message=str(e))
    try:
        gpts[0].chat.completions.create(model="gpt-5", messages=messages, extra_headers=h)
        emit("openai", raised=None)
    except openai.APIStatusError as e:
        emit("openai", raised=type(e).__name__, status=e.status_code, message=str(e))


def one():
    m = claudes[0].messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=messages,
                                   extra_headers={"x-fake-usage": fixed_usage})
    emit("anthropic", input=m.usage.input_tokens, output=m.usage.output_tokens)


modes = {"mixed": mixed, "until_blocked": until_blocked, "blocked": blocked, "one": one}
if mode not in modes:
    sys.exit(f"unknown MODE {mode}")
modes[mode]()
