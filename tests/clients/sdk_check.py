"""Drive the gateway with the official anthropic and openai SDKs (called by tests/tests/ingress.rs).

Environment: FAREGATE_URL (the gateway, no /v1), FAREGATE_KEY (a virtual key), FAKE_USAGE (the
x-fake-usage header the fake provider reports), MODE (`usage` or `blocked`). Prints one JSON line
per call with what the SDK saw, so the Rust side can compare it with the metered events.
"""

import json
import os
import sys

import anthropic
import openai

url = os.environ["FAREGATE_URL"]
key = os.environ["FAREGATE_KEY"]
headers = {"x-fake-usage": os.environ.get("FAKE_USAGE", "")}
mode = os.environ.get("MODE", "usage")

claude = anthropic.Anthropic(base_url=url, api_key=key, default_headers=headers)
gpt = openai.OpenAI(base_url=url + "/v1", api_key=key, default_headers=headers)
messages = [{"role": "user", "content": "hello"}]


def emit(call, **fields):
    print(json.dumps({"call": call, **fields}), flush=True)


if mode == "usage":
    m = claude.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=messages)
    emit("anthropic", input=m.usage.input_tokens, output=m.usage.output_tokens,
         cache_read=m.usage.cache_read_input_tokens)
    with claude.messages.stream(model="claude-sonnet-4-5", max_tokens=64, messages=messages) as s:
        final = s.get_final_message()
    emit("anthropic-stream", input=final.usage.input_tokens, output=final.usage.output_tokens,
         cache_read=final.usage.cache_read_input_tokens)
    tools = [{"name": "get_weather", "description": "weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    m = claude.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=messages, tools=tools)
    emit("anthropic-tools", stop_reason=m.stop_reason, input=m.usage.input_tokens)
    chunks = list(gpt.chat.completions.create(model="gpt-5", messages=messages, stream=True,
                                               stream_options={"include_usage": True}))
    usage = chunks[-1].usage
    emit("openai-chat-stream", prompt=usage.prompt_tokens, completion=usage.completion_tokens)
    r = gpt.responses.create(model="gpt-5-codex", input="hello")
    emit("openai-responses", input=r.usage.input_tokens, output=r.usage.output_tokens)
elif mode == "blocked":
    try:
        claude.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=messages)
        emit("anthropic", raised=None)
    except anthropic.APIStatusError as e:
        emit("anthropic", raised=type(e).__name__, status=e.status_code, message=str(e))
    try:
        gpt.chat.completions.create(model="gpt-5", messages=messages)
        emit("openai", raised=None)
    except openai.APIStatusError as e:
        emit("openai", raised=type(e).__name__, status=e.status_code, message=str(e))
else:
    sys.exit(f"unknown MODE {mode}")
