//! Alert delivery to webhooks: Slack-compatible JSON (`text` plus an attachment with the
//! fields), POSTed to every configured webhook and every http(s) target in the budget's
//! `notify`. Best effort: three attempts with backoff, failures are logged and counted, and
//! never hold up decisions. (The alerts topic is the durable record.)

use std::time::Duration;

use serde_json::json;

use faregate_core::event::{Alert, AlertSeverity};

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
                let mut delay = Duration::from_millis(500);
                for attempt in 1..=3 {
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
                    tokio::time::sleep(delay).await;
                    delay *= 4;
                }
                metrics::counter!("faregate_budget_webhooks_total", "outcome" => "failed").increment(1);
            });
        }
    }
}
