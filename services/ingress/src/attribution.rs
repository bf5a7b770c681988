//! Who and what a request is for, from its headers and body: the tool (from `user-agent`), the
//! session (Claude Code's `x-claude-code-session-id`, Codex's `session-id`, or the session in
//! Anthropic `metadata.user_id`), and the project and tags (`x-faregate-project`,
//! `x-faregate-tags: k=v,k2=v2`, which `ANTHROPIC_CUSTOM_HEADERS` can set). Values are
//! trimmed and capped in length so a header cannot bloat events.

use std::collections::BTreeMap;

use axum::http::HeaderMap;

use faregate_core::event::Tool;

const MAX_VALUE: usize = 128;
const MAX_TAGS: usize = 16;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim).filter(|v| !v.is_empty())
}

fn capped(value: &str) -> String {
    value.chars().take(MAX_VALUE).collect()
}

/// The client tool, from the user agent.
pub fn tool(headers: &HeaderMap) -> Tool {
    let agent = header(headers, "user-agent").unwrap_or("").to_ascii_lowercase();
    if agent.starts_with("claude-cli") || agent.contains("claude-code") {
        Tool::ClaudeCode
    } else if agent.starts_with("codex") {
        Tool::Codex
    } else if agent.contains("cursor") {
        Tool::Cursor
    } else if agent.starts_with("anthropic/")
        || agent.starts_with("openai/")
        || agent.starts_with("asyncopenai/")
        || agent.starts_with("asyncanthropic/")
        || agent.contains("openai-node")
        || agent.contains("anthropic-sdk")
        || headers.contains_key("x-stainless-lang")
    {
        Tool::Sdk
    } else {
        Tool::Other
    }
}

/// The session a request belongs to. `metadata_user_id` is Anthropic's `metadata.user_id`:
/// Claude Code sends a JSON string with a `session_id`, older versions `…_session_<uuid>`.
pub fn session(headers: &HeaderMap, metadata_user_id: Option<&str>) -> Option<String> {
    if let Some(id) = header(headers, "x-claude-code-session-id").or_else(|| header(headers, "session-id")) {
        return Some(capped(id));
    }
    let user_id = metadata_user_id?;
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(user_id)
        && let Some(id) = value.get("session_id").and_then(|v| v.as_str())
    {
        return Some(capped(id));
    }
    user_id.rsplit_once("_session_").map(|(_, id)| capped(id))
}

pub fn project(headers: &HeaderMap) -> Option<String> {
    header(headers, "x-faregate-project").map(capped)
}

/// `x-faregate-tags: team=infra, ticket=OPS-1`; entries without `=` are ignored.
pub fn tags(headers: &HeaderMap) -> BTreeMap<String, String> {
    let Some(raw) = header(headers, "x-faregate-tags") else { return BTreeMap::new() };
    raw.split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (capped(k.trim()), capped(v.trim())))
        .filter(|(k, _)| !k.is_empty())
        .take(MAX_TAGS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn tools_from_real_user_agents() {
        for (agent, want) in [
            ("claude-cli/2.1.197 (external, sdk-cli)", Tool::ClaudeCode),
            ("codex_exec/0.169.0 (Debian 12; x86_64) xterm", Tool::Codex),
            ("Cursor/1.7", Tool::Cursor),
            ("Anthropic/Python 2.12.0", Tool::Sdk),
            ("OpenAI/Python 3.54.0", Tool::Sdk),
            ("curl/8.5.0", Tool::Other),
        ] {
            assert_eq!(tool(&headers(&[("user-agent", agent)])), want, "{agent}");
        }
    }

    #[test]
    fn sessions_from_headers_and_metadata() {
        let id = "9b2c4c2e-0000-4000-8000-000000000001";
        assert_eq!(session(&headers(&[("x-claude-code-session-id", id)]), None).as_deref(), Some(id));
        assert_eq!(session(&headers(&[("session-id", "codex-1")]), None).as_deref(), Some("codex-1"));
        let json = format!(r#"{{"device_id":"d","account_uuid":"a","session_id":"{id}"}}"#);
        assert_eq!(session(&HeaderMap::new(), Some(&json)).as_deref(), Some(id));
        let legacy = format!("user_abc_account_def_session_{id}");
        assert_eq!(session(&HeaderMap::new(), Some(&legacy)).as_deref(), Some(id));
        assert_eq!(session(&HeaderMap::new(), Some("just-a-user")), None);
    }

    #[test]
    fn project_and_tags() {
        let h = headers(&[
            ("x-faregate-project", " billing "),
            ("x-faregate-tags", "ticket=OPS-1, env = prod,junk"),
        ]);
        assert_eq!(project(&h).as_deref(), Some("billing"));
        let tags = tags(&h);
        assert_eq!(tags.get("ticket").map(String::as_str), Some("OPS-1"));
        assert_eq!(tags.get("env").map(String::as_str), Some("prod"));
        assert_eq!(tags.len(), 2);
    }
}
