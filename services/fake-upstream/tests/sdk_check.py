#!/usr/bin/env python3
"""The official `anthropic` (2.x) and `openai` Python SDKs parse every fake-upstream route,
streaming and not, and read exactly the usage set with `x-fake-usage`.

Run: `python3 services/fake-upstream/tests/sdk_check.py [URL]` (needs `pip install anthropic
openai`). Without a URL it starts `cargo run -p faregate-fake-upstream --example serve` itself.
Prints `N passed, 0 failed` and exits non-zero on the first failure.
"""

import json
import subprocess
import sys

import anthropic
import openai

USAGE = "input=120,output=30,cache_read=1000,cache_write_5m=50,cache_write_1h=8,reasoning=7"
HEADERS = {"x-fake-usage": USAGE}
TOOL = {"name": "get_weather", "description": "weather",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
CHECKS = []


def check(function):
    CHECKS.append(function)
    return function


def assert_anthropic_usage(usage):
    assert usage.input_tokens == 120, usage
    assert usage.output_tokens == 37, usage
    assert usage.cache_read_input_tokens == 1000, usage
    assert usage.cache_creation_input_tokens == 58, usage


@check
def anthropic_message(url):
    client = anthropic.Anthropic(base_url=url, api_key="k", max_retries=0)
    message = client.messages.create(model="claude-test", max_tokens=100,
                                     messages=[{"role": "user", "content": "hi"}], extra_headers=HEADERS)
    assert message.content[0].type == "text" and message.content[0].text
    assert_anthropic_usage(message.usage)
    assert message.usage.cache_creation.ephemeral_5m_input_tokens == 50
    assert message.usage.cache_creation.ephemeral_1h_input_tokens == 8


@check
def anthropic_stream(url):
    client = anthropic.Anthropic(base_url=url, api_key="k", max_retries=0)
    with client.beta.messages.stream(model="claude-test", max_tokens=100,
                                     messages=[{"role": "user", "content": "hi"}], extra_headers=HEADERS) as stream:
        text = "".join(stream.text_stream)
        message = stream.get_final_message()
    assert text and message.content[0].text == text
    assert_anthropic_usage(message.usage)


@check
def anthropic_tool_use(url):
    client = anthropic.Anthropic(base_url=url, api_key="k", max_retries=0)
    message = client.messages.create(model="m", max_tokens=100, tools=[TOOL],
                                     messages=[{"role": "user", "content": "weather?"}])
    assert message.stop_reason == "tool_use" and message.content[0].input == {"city": "fake"}
    with client.messages.stream(model="m", max_tokens=100, tools=[TOOL],
                                messages=[{"role": "user", "content": "weather?"}]) as stream:
        message = stream.get_final_message()
    assert message.content[0].type == "tool_use" and message.content[0].input == {"city": "fake"}, message


@check
def anthropic_count_tokens(url):
    client = anthropic.Anthropic(base_url=url, api_key="k", max_retries=0)
    counted = client.messages.count_tokens(model="m", messages=[{"role": "user", "content": "x" * 400}])
    assert counted.input_tokens == 101, counted


def assert_chat_usage(usage):
    assert usage.prompt_tokens == 1120 and usage.completion_tokens == 37 and usage.total_tokens == 1157, usage
    assert usage.prompt_tokens_details.cached_tokens == 1000, usage
    assert usage.completion_tokens_details.reasoning_tokens == 7, usage


@check
def openai_chat(url):
    client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
    completion = client.chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "hi"}],
                                                extra_headers=HEADERS)
    assert completion.choices[0].message.content
    assert_chat_usage(completion.usage)
    chunks = list(client.chat.completions.create(model="gpt-5", messages=[{"role": "user", "content": "hi"}],
                                                 stream=True, stream_options={"include_usage": True},
                                                 extra_headers=HEADERS))
    assert chunks[-1].choices == []
    assert_chat_usage(chunks[-1].usage)
    tools = [{"type": "function", "function": {"name": TOOL["name"], "parameters": TOOL["input_schema"]}}]
    with client.chat.completions.stream(model="gpt-5", messages=[{"role": "user", "content": "w?"}],
                                        tools=tools) as stream:
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "fake"}


def assert_responses_usage(usage):
    assert usage.input_tokens == 1120 and usage.output_tokens == 37 and usage.total_tokens == 1157, usage
    assert usage.input_tokens_details.cached_tokens == 1000, usage
    assert usage.output_tokens_details.reasoning_tokens == 7, usage


@check
def openai_responses(url):
    client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
    response = client.responses.create(model="gpt-5", input="hi", extra_headers=HEADERS)
    assert response.output_text
    assert_responses_usage(response.usage)
    with client.responses.stream(model="gpt-5", input="hi", extra_headers=HEADERS) as stream:
        text = "".join(event.delta for event in stream if event.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert text and final.output_text == text
    assert_responses_usage(final.usage)
    tools = [{"type": "function", "name": TOOL["name"], "parameters": TOOL["input_schema"], "strict": False}]
    with client.responses.stream(model="gpt-5", input="w?", tools=tools) as stream:
        final = stream.get_final_response()
    assert final.output[0].type == "function_call" and json.loads(final.output[0].arguments) == {"city": "fake"}


@check
def openai_embeddings_and_models(url):
    client = openai.OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
    embeddings = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"],
                                          extra_headers={"x-fake-usage": "input=9"})
    assert len(embeddings.data) == 2 and len(embeddings.data[0].embedding) == 8
    assert embeddings.usage.prompt_tokens == 9
    assert any(model.id == "gpt-5" for model in client.models.list())


def main():
    server = None
    if len(sys.argv) > 1:
        url = sys.argv[1].rstrip("/")
    else:
        server = subprocess.Popen(["cargo", "run", "-q", "-p", "faregate-fake-upstream", "--example", "serve"],
                                  stdout=subprocess.PIPE, text=True)
        url = server.stdout.readline().strip()
    try:
        for function in CHECKS:
            function(url)
            print(f"ok {function.__name__}")
        print(f"{len(CHECKS)} passed, 0 failed")
    finally:
        if server is not None:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
