"""Drives `runtimes serve` with the official `openai` Python package.

Run by scripts/openai-client.sh against a server it starts with the echo and fixture plugins
and an API key. Every check raises (and the script exits non-zero) when the server does not
behave as an OpenAI-compatible server: listing models, a completion, a stream with usage,
tools in and tool calls out (streamed and not), errors, and auth.
"""

import argparse
import json
import sys

import openai
from openai import OpenAI


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print(f"ok: {what}")


def expect_error(error_type, call, what):
    try:
        call()
    except error_type as error:
        print(f"ok: {what} ({error.status_code} {error.code})")
        return error
    raise AssertionError(f"{what}: no {error_type.__name__} raised")


WEATHER = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "The weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"],
            },
        },
    }
]


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8700/v1")
    parser.add_argument("--api-key", required=True)
    args = parser.parse_args()
    client = OpenAI(base_url=args.base_url, api_key=args.api_key, max_retries=0, timeout=60)

    ids = [model.id for model in client.models.list()]
    check({"echo", "parrot", "fixture-tools"} <= set(ids), f"models listed: {ids}")

    # Not streamed, with the execution id from the response header.
    raw = client.chat.completions.with_raw_response.create(
        model="echo",
        messages=[
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "hello from python"},
        ],
    )
    execution_id = raw.headers.get("x-execution-id")
    completion = raw.parse()
    check(completion.choices[0].message.content == "hello from python", "a completion")
    check(completion.choices[0].finish_reason == "stop", "finish_reason stop")
    check(completion.usage.completion_tokens == 3, f"usage {completion.usage}")
    check(
        execution_id and completion.id == f"chatcmpl-{execution_id}",
        f"execution id {execution_id} in the header",
    )

    # Streamed, with the usage chunk.
    text, finish, usage = "", None, None
    stream = client.chat.completions.create(
        model="parrot",
        messages=[{"role": "user", "content": "one two three four"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    pieces = 0
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
            pieces += 1
        if chunk.usage:
            usage = chunk.usage
    check(text == "one two three four", f"streamed text {text!r} in {pieces} chunks")
    check(finish == "stop", "streamed finish_reason stop")
    check(usage is not None and usage.total_tokens == 8, f"usage chunk {usage}")

    # Tools in, tool calls out, the result back in.
    messages = [{"role": "user", "content": "Oslo"}]
    first = client.chat.completions.create(model="fixture-tools", messages=messages, tools=WEATHER)
    choice = first.choices[0]
    check(choice.finish_reason == "tool_calls", "finish_reason tool_calls")
    call = choice.message.tool_calls[0]
    check(call.function.name == "weather", "the tool called")
    check(json.loads(call.function.arguments) == {"text": "Oslo"}, "its arguments")
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny"})
    second = client.chat.completions.create(model="fixture-tools", messages=messages, tools=WEATHER)
    check(second.choices[0].message.content == "tool said: sunny", "the answer from the tool result")

    # Tool calls streamed in pieces.
    arguments, name = "", None
    stream = client.chat.completions.create(
        model="fixture-tools",
        messages=[{"role": "user", "content": "Bergen"}],
        tools=WEATHER,
        stream=True,
    )
    for chunk in stream:
        for piece in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            name = piece.function.name or name
            arguments += piece.function.arguments or ""
    check(name == "weather" and json.loads(arguments) == {"text": "Bergen"}, "streamed tool call")

    # Errors.
    error = expect_error(
        openai.NotFoundError,
        lambda: client.chat.completions.create(
            model="no-such-runtime", messages=[{"role": "user", "content": "x"}]
        ),
        "an unknown model",
    )
    check(error.code == "model_not_found" and error.param == "model", "names the model")
    check("echo" in error.message, "lists the available models")
    error = expect_error(
        openai.BadRequestError,
        lambda: client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": "x"}], temperature=5
        ),
        "a bad field",
    )
    check(error.param == "temperature", "names the field")
    expect_error(
        openai.RateLimitError,
        lambda: client.chat.completions.create(
            model="fixture-tools", messages=[{"role": "user", "content": "fail rate_limited"}]
        ),
        "a rate-limited runtime",
    )
    expect_error(
        openai.InternalServerError,
        lambda: client.chat.completions.create(
            model="fixture-tools",
            messages=[{"role": "user", "content": "fail unavailable"}],
            stream=True,
        ),
        "an unavailable runtime, streamed",
    )

    # Auth.
    wrong = OpenAI(base_url=args.base_url, api_key="wrong-key", max_retries=0, timeout=60)
    expect_error(openai.AuthenticationError, lambda: wrong.models.list(), "a wrong API key")

    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
