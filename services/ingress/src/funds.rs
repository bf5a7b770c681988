//! Telling a provider account out of funds apart from a Faregate budget block. When the
//! provider refuses for money (Anthropic: a 400 `invalid_request_error` saying the credit
//! balance is too low; OpenAI: a 429 `insufficient_quota`), clients would show a message that
//! reads like a budget block. The gateway keeps the provider's status and error shape and puts
//! in front of the message that the provider account is out of funds, which is not a Faregate
//! budget, so the developer asks whoever pays the provider, not whoever owns the budget.

use bytes::Bytes;
use serde_json::Value;

use crate::config::Provider;

/// The response header marking such an answer.
pub const HEADER: &str = "x-faregate-provider-out-of-funds";

fn is_out_of_funds(provider: Provider, status: u16, body: &Value) -> bool {
    let error = &body["error"];
    match provider {
        Provider::Anthropic => {
            status == 400
                && error["type"] == "invalid_request_error"
                && error["message"]
                    .as_str()
                    .is_some_and(|m| m.to_ascii_lowercase().contains("credit balance"))
        }
        Provider::Openai => {
            status == 429 && (error["code"] == "insufficient_quota" || error["type"] == "insufficient_quota")
        }
    }
}

/// The body to send instead, when `body` is the provider saying its account cannot pay.
pub fn rewrite(provider: Provider, upstream: &str, status: u16, body: &[u8]) -> Option<Bytes> {
    if !matches!(status, 400 | 429) {
        return None;
    }
    let mut value: Value = serde_json::from_slice(body).ok()?;
    if !is_out_of_funds(provider, status, &value) {
        return None;
    }
    let original = value["error"]["message"].as_str().unwrap_or_default().to_string();
    value["error"]["message"] = Value::String(format!(
        "The {} provider account behind this Faregate gateway (upstream \"{upstream}\") is out of funds; \
         this is not a Faregate budget block, your budget is not exhausted. Ask whoever runs the gateway to \
         top up the provider account. The provider said: {original}",
        provider.name()
    ));
    serde_json::to_vec(&value).ok().map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_providers_money_refusals_are_rewritten() {
        let anthropic = br#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API."}}"#;
        let out = rewrite(Provider::Anthropic, "main", 400, anthropic).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            (v["type"].as_str(), v["error"]["type"].as_str()),
            (Some("error"), Some("invalid_request_error"))
        );
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains("out of funds") && message.contains("not a Faregate budget"), "{message}");
        assert!(
            message.ends_with("Your credit balance is too low to access the Anthropic API."),
            "{message}"
        );

        let openai = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
        let v: Value =
            serde_json::from_slice(&rewrite(Provider::Openai, "oa", 429, openai).unwrap()).unwrap();
        assert_eq!(v["error"]["code"], "insufficient_quota");
        assert!(v["error"]["message"].as_str().unwrap().contains("openai provider account"), "{v}");

        // Other errors pass untouched.
        let other_400 =
            br#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: too large"}}"#;
        assert_eq!(rewrite(Provider::Anthropic, "main", 400, other_400), None);
        let rate = br#"{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}"#;
        assert_eq!(rewrite(Provider::Openai, "oa", 429, rate), None);
        assert_eq!(rewrite(Provider::Openai, "oa", 400, openai), None);
        assert_eq!(rewrite(Provider::Anthropic, "main", 400, b"not json"), None);
    }
}
