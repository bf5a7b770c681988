//! The example configs for the gateways no registry reachable here ships (Envoy, Traefik, Kong:
//! no Debian package, nothing on PyPI, npm or crates.io that runs them), checked offline: each
//! file, rendered as its header says, parses as YAML, and what ties it to Faregate is there:
//! the check's URL and path, the headers the check may see (the client's key, never its
//! `x-faregate-*`), the refusal passed on to the client, and the provider's key in place of the
//! virtual one. The Envoy file is also checked against Envoy's API (every field, enum value and
//! `typed_config` one Envoy's protos define). What they do at run time is not shown here
//! (docs/integrations.md says so).
//!
//! tests/gateways/to_json.py reads the YAML, in the venv of `FAREGATE_TEST_GATEWAYS_PYTHON`
//! (PyYAML and envoy-data-plane; deploy/local/install makes it, deploy/local/test sets it).

use std::io::Write;
use std::process::Stdio;

use serde_json::Value;

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// `path` with `${NAME}` replaced by each value, as `envsubst` would.
fn render(path: &str, values: &[(&str, &str)]) -> String {
    let mut text = std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap();
    for (name, value) in values {
        text = text.replace(&format!("${{{name}}}"), value);
    }
    assert!(!text.contains("${"), "every variable of {path} is set");
    text
}

/// The YAML document `text` as JSON.
fn yaml(text: &str) -> Value {
    to_json(text, &[]).unwrap_or_else(|error| panic!("{error}"))
}

/// The Envoy bootstrap `text` as JSON, once Envoy's API accepts it; else why not.
fn envoy(text: &str) -> Result<Value, String> {
    to_json(text, &["--envoy"])
}

fn to_json(text: &str, flags: &[&str]) -> Result<Value, String> {
    let python = std::env::var("FAREGATE_TEST_GATEWAYS_PYTHON").unwrap_or_else(|_| {
        panic!("FAREGATE_TEST_GATEWAYS_PYTHON is not set: run the tests with deploy/local/test")
    });
    let mut child = std::process::Command::new(python)
        .arg(format!("{ROOT}/tests/gateways/to_json.py"))
        .args(flags)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&output.stdout).unwrap())
}

fn strings(value: &Value) -> Vec<&str> {
    value.as_array().map(|items| items.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

/// The `exact` and `prefix` matchers of an Envoy `ListStringMatcher`.
fn patterns(matcher: &Value) -> Vec<String> {
    let mut found = Vec::new();
    for pattern in matcher["patterns"].as_array().expect("patterns") {
        if let Some(exact) = pattern["exact"].as_str() {
            found.push(exact.to_string());
        }
        if let Some(prefix) = pattern["prefix"].as_str() {
            found.push(format!("{prefix}*"));
        }
    }
    found
}

#[test]
fn envoy_asks_faregate_with_ext_authz_and_passes_its_refusal_on() {
    let text = render(
        "deploy/integrations/envoy/envoy.yaml",
        &[
            ("FAREGATE_HOST", "faregate.test"),
            ("FAREGATE_PORT", "8080"),
            ("ANTHROPIC_KEY", "sk-a"),
            ("OPENAI_KEY", "sk-o"),
        ],
    );
    let config = envoy(&text).unwrap_or_else(|error| panic!("{error}"));
    let manager =
        &config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
    let filters = manager["http_filters"].as_array().expect("http filters");
    let names: Vec<&str> = filters.iter().filter_map(|f| f["name"].as_str()).collect();
    assert_eq!(
        names,
        ["envoy.filters.http.ext_authz", "envoy.filters.http.router"],
        "the check before routing"
    );
    let authz = &filters[0]["typed_config"];
    assert_eq!(authz["@type"], "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz");
    let service = &authz["http_service"];
    // check.rs reads the original path after `/v1/check` (`/v1/check/v1/messages`).
    assert_eq!(service["path_prefix"], "/v1/check");
    assert_eq!(service["server_uri"]["uri"], "http://faregate.test:8080");
    assert_eq!(service["server_uri"]["cluster"], "faregate");
    assert_eq!(authz["failure_mode_allow"], false);
    let to_check = patterns(&authz["allowed_headers"]);
    assert_eq!(
        to_check,
        ["x-api-key", "anthropic-version"],
        "the key (Authorization goes always), never x-faregate-*"
    );
    let refused = patterns(&service["authorization_response"]["allowed_client_headers"]);
    for header in ["content-type", "x-should-retry", "x-faregate-*"] {
        assert!(refused.iter().any(|h| h == header), "{header} reaches a refused client: {refused:?}");
    }
    let allowed = patterns(&service["authorization_response"]["allowed_client_headers_on_success"]);
    assert!(allowed.iter().any(|h| h == "x-faregate-budget-remaining"), "{allowed:?}");
    assert!(
        service["authorization_response"]["allowed_upstream_headers"].is_null(),
        "no attribution to a provider"
    );

    let clusters = config["static_resources"]["clusters"].as_array().unwrap();
    let faregate = clusters.iter().find(|c| c["name"] == "faregate").expect("a faregate cluster");
    let address = &faregate["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"];
    assert_eq!(
        (address["address"].as_str(), address["port_value"].as_u64()),
        (Some("faregate.test"), Some(8080))
    );

    let routes = manager["route_config"]["virtual_hosts"][0]["routes"].as_array().unwrap();
    let anthropic = &routes[0];
    assert_eq!(anthropic["match"]["prefix"], "/v1/messages");
    assert_eq!(strings(&anthropic["request_headers_to_remove"]), ["authorization"]);
    assert_eq!(anthropic["request_headers_to_add"][0]["header"]["key"], "x-api-key");
    assert_eq!(anthropic["request_headers_to_add"][0]["header"]["value"], "sk-a");
    assert_eq!(anthropic["request_headers_to_add"][0]["append_action"], "OVERWRITE_IF_EXISTS_OR_ADD");
    let openai = &routes[1];
    assert_eq!(strings(&openai["request_headers_to_remove"]), ["x-api-key"]);
    assert_eq!(openai["request_headers_to_add"][0]["header"]["value"], "Bearer sk-o");
}

#[test]
fn the_envoy_check_rejects_what_envoy_does_not_know() {
    let text = render(
        "deploy/integrations/envoy/envoy.yaml",
        &[
            ("FAREGATE_HOST", "faregate.test"),
            ("FAREGATE_PORT", "8080"),
            ("ANTHROPIC_KEY", "sk-a"),
            ("OPENAI_KEY", "sk-o"),
        ],
    );
    for (right, wrong) in [
        ("path_prefix: /v1/check", "path_prefixx: /v1/check"),
        ("code: ServiceUnavailable", "code: NotAStatus"),
        ("ext_authz.v3.ExtAuthz", "ext_authz.v3.ExtAuthzz"),
    ] {
        assert!(text.contains(right), "{right}");
        let error = envoy(&text.replacen(right, wrong, 1)).expect_err(wrong);
        assert!(error.contains("not a valid Envoy bootstrap"), "{wrong}: {error}");
    }
}

#[test]
fn traefik_asks_faregate_with_forward_auth_before_the_key_is_replaced() {
    let config =
        yaml(&std::fs::read_to_string(format!("{ROOT}/deploy/integrations/traefik/faregate.yml")).unwrap());
    let http = &config["http"];
    let auth = &http["middlewares"]["faregate-check"]["forwardAuth"];
    // Traefik's file provider fills the template; Traefik sends the path as X-Forwarded-Uri.
    assert_eq!(auth["address"], r#"{{ env "FAREGATE_URL" }}/v1/check"#);
    assert_eq!(auth["trustForwardHeader"], false, "a client cannot choose X-Forwarded-Uri");
    assert_eq!(strings(&auth["authRequestHeaders"]), ["X-Api-Key", "Authorization", "Anthropic-Version"]);
    let to_upstream = strings(&auth["authResponseHeaders"]);
    assert!(
        !to_upstream.is_empty() && to_upstream.iter().all(|h| h.starts_with("X-Faregate-")),
        "{to_upstream:?}"
    );
    for (router, key) in [("anthropic", "anthropic-key"), ("openai", "openai-key")] {
        let middlewares = strings(&http["routers"][router]["middlewares"]);
        assert_eq!(
            middlewares,
            ["faregate-check", key],
            "the check sees the virtual key, the provider its own"
        );
        assert!(
            http["services"][router]["loadBalancer"]["servers"][0]["url"]
                .as_str()
                .unwrap()
                .starts_with("https://")
        );
    }
    assert_eq!(http["routers"]["anthropic"]["rule"], "PathPrefix(`/v1/messages`)");
    let anthropic = &http["middlewares"]["anthropic-key"]["headers"]["customRequestHeaders"];
    assert_eq!(
        (anthropic["X-Api-Key"].as_str(), anthropic["Authorization"].as_str()),
        (Some(r#"{{ env "ANTHROPIC_KEY" }}"#), Some(""))
    );
    let openai = &http["middlewares"]["openai-key"]["headers"]["customRequestHeaders"];
    assert_eq!(
        (openai["Authorization"].as_str(), openai["X-Api-Key"].as_str()),
        (Some(r#"Bearer {{ env "OPENAI_KEY" }}"#), Some(""))
    );
}

#[test]
fn kong_asks_faregate_from_a_pre_function_and_passes_its_refusal_on() {
    let text = render(
        "deploy/integrations/kong/kong.yml",
        &[("FAREGATE_URL", "http://faregate.test:8080"), ("ANTHROPIC_KEY", "sk-a"), ("OPENAI_KEY", "sk-o")],
    );
    let config = yaml(&text);
    assert_eq!(config["_format_version"], "3.0");
    let plugin = &config["plugins"][0];
    assert_eq!(plugin["name"], "pre-function");
    let lua = plugin["config"]["access"][0].as_str().expect("Lua for the access phase");
    for needed in [
        r#"request_uri("http://faregate.test:8080/v1/check""#,
        r#"["x-api-key"] = kong.request.get_header("x-api-key")"#,
        r#"["authorization"] = kong.request.get_header("authorization")"#,
        r#"["x-forwarded-uri"] = kong.request.get_path_with_query()"#,
        "if answer.status ~= 200 then",
        "kong.response.exit(answer.status, answer.body,",
        r#"["x-should-retry"] = answer.headers["x-should-retry"]"#,
        "kong.response.exit(503,",
    ] {
        assert!(lua.contains(needed), "the check's Lua has {needed}:\n{lua}");
    }
    assert!(!lua.contains("x-faregate-collector-token"), "a client's key decides, not a trusted header");
    let services = config["services"].as_array().unwrap();
    for (service, path, header) in [
        (&services[0], "/v1/messages", "x-api-key:sk-a"),
        (&services[1], "/v1/", "authorization:Bearer sk-o"),
    ] {
        assert_eq!(strings(&service["routes"][0]["paths"]), [path]);
        let transformer = &service["plugins"][0];
        assert_eq!(transformer["name"], "request-transformer");
        assert_eq!(strings(&transformer["config"]["remove"]["headers"]), ["x-api-key", "authorization"]);
        assert_eq!(strings(&transformer["config"]["add"]["headers"]), [header]);
    }
}
