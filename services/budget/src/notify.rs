//! Alert delivery to webhooks: Slack-compatible JSON (`text` plus an attachment with the
//! fields), POSTed to every configured webhook and every http(s) target in the budget's
//! `notify`. Best effort: three attempts with backoff, failures are logged and counted, and
//! never hold up decisions. (The alerts topic is the durable record.)

use std::time::Duration;

use serde_json::json;

use faregate_core::event::{Alert, AlertSeverity};
use faregate_core::retry::{Retry, RetryPolicy};

/// Three attempts, 0.5-1 s then 1-2 s apart, paced by the project's one retry authority.
const WEBHOOK_RETRY: RetryPolicy = RetryPolicy {
    initial: Duration::from_millis(1000),
    max: Duration::from_secs(4),
    max_attempts: 3,
    max_hint: Duration::from_secs(60),
    deadline: Duration::from_secs(60),
};

#[derive(Debug, Clone)]
pub struct Notifier {
    client: reqwest::Client,
    webhooks: Vec<String>,
}

/// The Slack-compatible body of an alert.
pub fn slack_payload(alert: &Alert) -> serde_json::Value {
    let owner = alert.owner.as_deref().unwrap_or("no owner set");
    let color = match alert.severity {
        AlertSeverity::Info => "#439FE0",
        AlertSeverity::Warning => "warning",
        AlertSeverity::Critical => "danger",
    };
    let mut fields = vec![
        json!({"title": "Subject", "value": alert.subject, "short": true}),
        json!({"title": "Owner", "value": owner, "short": true}),
        json!({"title": "Spent", "value": format!("${}", alert.spent_usd.0.round_dp(2)), "short": true}),
    ];
    if let Some(limit) = alert.limit_usd {
        fields.push(json!({"title": "Limit", "value": format!("${}", limit.0.round_dp(2)), "short": true}));
    }
    json!({
        "text": format!("*{}* (owner: {owner})\n{}", alert.title, alert.message),
        "attachments": [{"color": color, "fields": fields, "footer": format!("faregate {}", alert.alert_key)}],
    })
}

impl Notifier {
    pub fn new(webhooks: Vec<String>) -> Notifier {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default();
        Notifier { client, webhooks }
    }

    /// The webhook URLs an alert goes to.
    pub fn targets(&self, alert: &Alert) -> Vec<String> {
        let mut targets: Vec<String> = self.webhooks.clone();
        for t in &alert.notify {
            if (t.starts_with("https://") || t.starts_with("http://")) && !targets.contains(t) {
                targets.push(t.clone());
            }
        }
        targets
    }

    /// Deliver in the background.
    pub fn deliver(&self, alert: &Alert) {
        let body = slack_payload(alert);
        for url in self.targets(alert) {
            let client = self.client.clone();
            let body = body.clone();
            let key = alert.alert_key.clone();
            tokio::spawn(async move {
                let mut retry = Retry::new(WEBHOOK_RETRY);
                loop {
                    let attempt = retry.attempts();
                    match client.post(&url).json(&body).send().await {
                        Ok(r) if r.status().is_success() => {
                            metrics::counter!("faregate_budget_webhooks_total", "outcome" => "ok")
                                .increment(1);
                            return;
                        }
                        Ok(r) => {
                            tracing::warn!(alert = %key, status = %r.status(), attempt, "webhook refused an alert")
                        }
                        Err(error) => {
                            tracing::warn!(alert = %key, %error, attempt, "webhook delivery failed")
                        }
                    }
                    match retry.next_delay(None) {
                        Ok(delay) => tokio::time::sleep(delay).await,
                        Err(_) => break,
                    }
                }
                metrics::counter!("faregate_budget_webhooks_total", "outcome" => "failed").increment(1);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use proptest::strategy::{Strategy, ValueTree};

    use super::*;

    /// A webhook that fails twice gets the alert on the third attempt.
    #[tokio::test]
    async fn a_failing_webhook_is_tried_three_times() {
        let hits = Arc::new(AtomicU32::new(0));
        let counter = hits.clone();
        let app =
            axum::Router::new().route(
                "/hook",
                axum::routing::post(move || {
                    let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                    async move {
                        if n < 3 { axum::http::StatusCode::BAD_GATEWAY } else { axum::http::StatusCode::OK }
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let mut alert = faregate_core::event::arbitrary::alert()
            .new_tree(&mut proptest::test_runner::TestRunner::deterministic())
            .unwrap()
            .current();
        alert.notify.clear();
        Notifier::new(vec![url]).deliver(&alert);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while hits.load(Ordering::SeqCst) < 3 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} attempts after 10 s",
                hits.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
