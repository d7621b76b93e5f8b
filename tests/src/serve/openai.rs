//! The OpenAI API as clients see it: models, completions, streams, tools, every error in
//! OpenAI's shape, and what `/healthz`, `/v1/runtimes` and `/metrics` report.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn models_lists_every_runtime_id_and_alias() {
    let server = Server::start(&[]).await;
    let (status, body) = get(&server, "/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(body["object"], "list");
    let ids: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, served_names());
    assert!(
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["object"] == "model")
    );

    let (status, body) = get(&server, "/v1/models/parrot").await;
    assert_eq!(
        (status, body["id"].clone()),
        (StatusCode::OK, json!("parrot"))
    );
    let (status, body) = get(&server, "/v1/models/nothing").await;
    assert_eq!(status, 404);
    assert_openai_error(
        &body,
        "invalid_request_error",
        Some("model"),
        "model_not_found",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_completion_maps_messages_and_returns_usage_and_the_execution_id() {
    let server = Server::start(&[]).await;
    let (status, headers, body) = post(
        &server,
        "/v1/chat/completions",
        &json!({
            "model": "echo",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello you"},
                {"role": "user", "content": "hello there world"}
            ]
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let execution_id = headers["x-execution-id"].to_str().unwrap();
    assert_eq!(body["id"], format!("chatcmpl-{execution_id}"));
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "echo");
    let choice = &body["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "hello there world");
    assert_eq!(choice["finish_reason"], "stop");
    // echo counts words: prompt 3 + system 2 + history 1 + 2 in, prompt 3 out.
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 8, "completion_tokens": 3, "total_tokens": 11})
    );

    // What the runtime receives: RUNTIME/MODEL, system, history, sampling, the execution id.
    let (status, headers, body) = post(
        &server,
        "/v1/chat/completions",
        &json!({
            "model": "fixture-tools/some-model",
            "messages": [
                {"role": "system", "content": "one"},
                {"role": "developer", "content": "two"},
                {"role": "user", "content": "earlier"},
                {"role": "user", "content": "show request"}
            ],
            "max_tokens": 12, "temperature": 0.25, "stop": ["END", "STOP"]
        }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let seen: Value =
        serde_json::from_str(body["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(seen["model"], "some-model");
    assert_eq!(seen["system"], "one\n\ntwo");
    assert_eq!(
        seen["history"],
        json!([{"role": "user", "content": "earlier"}])
    );
    assert_eq!(
        seen["sampling"],
        json!({"max_tokens": 12, "temperature": 0.25, "stop": ["END", "STOP"]})
    );
    assert_eq!(
        seen["execution_id"],
        headers["x-execution-id"].to_str().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_sends_chunks_usage_and_done() {
    let server = Server::start(&[]).await;
    let (status, headers, mut events) = stream(
        &server,
        &json!({"model": "parrot", "messages": user("hello there world"), "stream": true,
                "stream_options": {"include_usage": true}}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let execution_id = headers["x-execution-id"].to_str().unwrap().to_owned();
    let data = events.rest().await;
    assert_eq!(data.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["id"] == format!("chatcmpl-{execution_id}"))
    );
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "hello there world");
    assert!(chunks.len() >= 5, "one chunk per word: {chunks:?}");
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6})
    );

    // Without include_usage: no usage chunk.
    let (_, _, mut events) = stream(
        &server,
        &json!({"model": "echo", "messages": user("a b"), "stream": true}),
    )
    .await;
    let data = events.rest().await;
    let last: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert!(data.iter().all(|d| !d.contains("\"usage\":{")), "{data:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runtime_that_does_not_stream_answers_a_stream_in_one_chunk() {
    let server = Server::start(&[]).await;
    let (status, _, mut events) = stream(
        &server,
        &json!({"model": "fx", "messages": user("x y"), "stream": true}),
    )
    .await;
    assert_eq!(status, 200);
    let data = events.rest().await;
    let text: String = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "fixture:x y");
    assert_eq!(data.last().unwrap(), "[DONE]");
}

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {"name": "weather", "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"text": {"type": "string"}}}}}])
}

#[tokio::test(flavor = "multi_thread")]
async fn tools_go_in_and_tool_calls_come_out() {
    let server = Server::start(&[]).await;
    let (status, _, body) = post(
        &server,
        "/v1/chat/completions",
        &json!({"model": "fixture-tools", "messages": user("Oslo"), "tools": weather_tool()}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["id"], "call_1");
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "weather");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"text": "Oslo"}));

    // The tool's result goes back as history; the runtime answers from it.
    let (status, _, body) = post(
        &server,
        "/v1/chat/completions",
        &json!({"model": "fixture-tools", "tools": weather_tool(), "messages": [
            {"role": "user", "content": "Oslo"},
            {"role": "assistant", "content": null, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["choices"][0]["message"]["content"], "tool said: sunny");
    assert_eq!(body["choices"][0]["finish_reason"], "stop");

    // Streamed: the pieces of the call add up to the same call.
    let (status, _, mut events) = stream(
        &server,
        &json!({"model": "fixture-tools", "messages": user("Oslo"), "tools": weather_tool(),
                "stream": true}),
    )
    .await;
    assert_eq!(status, 200);
    let chunks: Vec<Value> = events
        .rest()
        .await
        .iter()
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    let pieces: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert_eq!(pieces.len(), 2, "{chunks:?}");
    assert_eq!(pieces[0]["id"], "call_1");
    assert_eq!(pieces[0]["function"]["name"], "weather");
    let arguments: String = pieces
        .iter()
        .map(|p| p["function"]["arguments"].as_str().unwrap())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).unwrap(),
        json!({"text": "Oslo"})
    );
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "tool_calls")
    );

    // A runtime without the tools capability refuses tools: 400.
    let (status, _, body) = post(
        &server,
        "/v1/chat/completions",
        &json!({"model": "echo", "messages": user("Oslo"), "tools": weather_tool()}),
    )
    .await;
    assert_eq!(status, 400);
    assert_openai_error(&body, "invalid_request_error", None, "unsupported");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_400s_naming_the_field() {
    let server = Server::start(&[]).await;
    let chat = "/v1/chat/completions";
    let (status, _, body) = post_raw(&server, chat, b"{not json".to_vec(), &[]).await;
    assert_eq!(status, 400);
    assert_openai_error(&body, "invalid_request_error", None, "invalid_value");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );

    let cases = [
        (json!({"messages": user("x")}), "model"),
        (json!({"model": "echo"}), "messages"),
        (json!({"model": "echo", "messages": []}), "messages"),
        (
            json!({"model": "echo", "messages": [{"role": "pilot", "content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"model": "echo", "messages": [{"role": "user", "content": 7}]}),
            "messages[0].content",
        ),
        (
            json!({"model": "echo", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
            "messages[0].content[0].type",
        ),
        (
            json!({"model": "echo", "messages": [{"role": "tool", "content": "r"}]}),
            "messages[0].tool_call_id",
        ),
        (
            json!({"model": "echo", "messages": user("x"), "temperature": 3}),
            "temperature",
        ),
        (
            json!({"model": "echo", "messages": user("x"), "max_tokens": -1}),
            "max_tokens",
        ),
        (
            json!({"model": "echo", "messages": user("x"), "stream": "yes"}),
            "stream",
        ),
        (json!({"model": "echo", "messages": user("x"), "n": 2}), "n"),
        (
            json!({"model": "echo", "messages": user("x"), "tools": [{"type": "web"}]}),
            "tools[0].function",
        ),
    ];
    for (request, param) in cases {
        let (status, _, body) = post(&server, chat, &request).await;
        assert_eq!(status, 400, "{request}: {body}");
        assert_openai_error(&body, "invalid_request_error", Some(param), "invalid_value");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_model_is_a_404_listing_the_available_ones() {
    let server = Server::start(&[]).await;
    for model in ["nope", "nope/inner"] {
        let (status, _, body) = post(
            &server,
            "/v1/chat/completions",
            &json!({"model": model, "messages": user("x")}),
        )
        .await;
        assert_eq!(status, 404);
        assert_openai_error(
            &body,
            "invalid_request_error",
            Some("model"),
            "model_not_found",
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(&format!("`{model}`")), "{message}");
        assert!(message.contains(&served_names().join(", ")), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_error_kinds_map_to_status_codes_streamed_or_not() {
    let server = Server::start(&[]).await;
    let cases = [
        ("invalid_request", 400, "invalid_request_error"),
        ("unsupported", 400, "invalid_request_error"),
        ("rate_limited", 429, "rate_limit_error"),
        ("authentication", 502, "upstream_error"),
        ("unavailable", 503, "server_error"),
        ("timeout", 504, "timeout_error"),
        ("internal", 500, "server_error"),
        ("invalid_config", 500, "server_error"),
        ("something_new", 500, "server_error"),
    ];
    for (kind, status, kind_type) in cases {
        for streamed in [false, true] {
            let (got, headers, body) = post(
                &server,
                "/v1/chat/completions",
                &json!({"model": "fixture-tools", "messages": user(&format!("fail {kind}")),
                        "stream": streamed}),
            )
            .await;
            assert_eq!(got.as_u16(), status, "{kind} streamed={streamed}: {body}");
            assert_openai_error(&body, kind_type, None, kind);
            assert!(headers.contains_key("x-execution-id"), "{kind}");
            assert_eq!(
                headers.contains_key("retry-after"),
                ["rate_limited", "unavailable", "timeout"].contains(&kind),
                "{kind}"
            );
        }
    }
    assert_eq!(
        server
            .metric("runtimes_serve_errors_total", &["kind=\"rate_limited\""])
            .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_error_after_the_first_chunk_ends_the_stream_with_an_error_event() {
    let server = Server::start(&[]).await;
    let (status, _, mut events) = stream(
        &server,
        &json!({"model": "fixture-tools", "messages": user("fail late unavailable"),
                "stream": true}),
    )
    .await;
    assert_eq!(status, 200);
    let data = events.rest().await;
    assert_eq!(data.last().unwrap(), "[DONE]", "{data:?}");
    let error: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_openai_error(&error, "server_error", None, "unavailable");
    assert!(data.iter().any(|d| d.contains("partial ")), "{data:?}");
    assert_eq!(
        server
            .metric(
                "runtimes_serve_turns_total",
                &["runtime=\"fixture-tools\"", "outcome=\"error\""]
            )
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_routes_and_methods_answer_in_the_openai_shape() {
    let server = Server::start(&[]).await;
    let (status, body) = get(&server, "/v1/nothing").await;
    assert_eq!(status, 404);
    assert_openai_error(&body, "not_found_error", None, "unknown_url");
    let (status, body) = get(&server, "/v1/chat/completions").await;
    assert_eq!(status, 405);
    assert_openai_error(&body, "invalid_request_error", None, "method_not_allowed");
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_runtimes_and_metrics_report_the_server() {
    let server = Server::start_with(&[], &[], |dir| {
        write_candidate(dir, "libjunk", b"not a library");
    })
    .await;
    let (status, body) = get(&server, "/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["runtimes"], served_runtimes());

    let (status, body) = get(&server, "/v1/runtimes").await;
    assert_eq!(status, 200);
    let echo = &body["runtimes"][0];
    assert_eq!(echo["id"], "echo");
    assert_eq!(echo["aliases"], json!(["parrot"]));
    assert!(
        echo["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("streaming"))
    );
    assert_eq!(body["rejected"][0]["reason"]["kind"], "not_a_library");
    assert!(
        body["rejected"][0]["path"]
            .as_str()
            .unwrap()
            .ends_with("libjunk.so")
    );

    let (status, _, _) = post(
        &server,
        "/v1/chat/completions",
        &json!({"model": "echo", "messages": user("a")}),
    )
    .await;
    assert_eq!(status, 200);
    let response = client().get(server.url("/metrics")).send().await.unwrap();
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    for expected in [
        "runtimes_serve_turns_total{runtime=\"echo\",stream=\"false\",outcome=\"ok\"} 1",
        "runtimes_serve_turn_duration_seconds_bucket{runtime=\"echo\",stream=\"false\",le=\"+Inf\"} 1",
        "runtimes_serve_turns_in_flight 0",
        "# TYPE runtimes_serve_turn_duration_seconds histogram",
    ] {
        assert!(text.contains(expected), "no `{expected}` in:\n{text}");
    }
}
