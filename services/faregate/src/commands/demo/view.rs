//! The demo's live view: spend today by team, user, model and tool (the `spend_by` view, through
//! [`report::fetch`], the query of `faregate report`), and the gateway's decisions with a log of
//! each change as the ingress applies it (its decisions API), and the requests the gateway refused
//! per person (from the cast: a refusal by reservation comes before any block decision, and may
//! make one unnecessary). Redrawn every second in place on a
//! terminal; printed frame after frame otherwise (logs, pipes, tests).
//!
//! Amounts are rounded to cents for reading only ([`report::cents`]); the ledger keeps them exact.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use comfy_table::{CellAlignment, Table};
use tokio_util::sync::CancellationToken;

use super::super::report::{self, SpendRow};
use super::cast::Refusals;
use crate::cli::ReportDimension;
use faregate_core::clickhouse::ClickHouseConfig;
use faregate_core::event::{Decision, DecisionJson, DecisionState};
use faregate_core::money::Usd;

const REFRESH: Duration = Duration::from_secs(1);
const ROWS: usize = 6;
const LOG_LINES: usize = 8;

pub struct View {
    clickhouse: ClickHouseConfig,
    gateway: String,
    collector_token: String,
    client: reqwest::Client,
    tty: bool,
    /// The latest decision seen per subject, and the change log (newest last).
    decisions: BTreeMap<String, Decision>,
    log: Vec<String>,
    refusals: Refusals,
    /// The people whose first refusal is in the log already.
    refused_logged: std::collections::BTreeSet<String>,
}

impl View {
    pub fn new(
        clickhouse: ClickHouseConfig,
        gateway: String,
        collector_token: String,
        client: reqwest::Client,
        refusals: Refusals,
    ) -> View {
        let tty = std::io::stdout().is_terminal();
        View {
            clickhouse,
            gateway,
            collector_token,
            client,
            tty,
            decisions: BTreeMap::new(),
            log: Vec::new(),
            refusals,
            refused_logged: Default::default(),
        }
    }

    /// Refresh until `shutdown`, then print a last frame.
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let frame = self.frame().await;
            self.show(&frame);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(REFRESH) => {}
            }
        }
        let frame = self.frame().await;
        self.show(&frame);
        println!("demo stopped; the services are draining");
    }

    fn show(&self, frame: &str) {
        let mut stdout = std::io::stdout().lock();
        if self.tty {
            // Clear the screen and move home: a plain redraw.
            let _ = write!(stdout, "\x1b[2J\x1b[H");
        } else {
            let _ = writeln!(stdout, "----");
        }
        let _ = write!(stdout, "{frame}");
        let _ = stdout.flush();
    }

    async fn frame(&mut self) -> String {
        let now = Utc::now();
        let mut frame = format!(
            "Faregate demo: gateway {} (fake provider), {} UTC. Ctrl-C stops everything.\n\n",
            self.gateway,
            now.format("%H:%M:%S")
        );
        let today = now.date_naive();
        let tomorrow = today + TimeDelta::days(1);
        for by in
            [ReportDimension::Team, ReportDimension::User, ReportDimension::Model, ReportDimension::Tool]
        {
            match report::fetch(&self.clickhouse, by, today, tomorrow, None).await {
                Ok(rows) => frame.push_str(&spend_table(&rows, by)),
                Err(e) => frame.push_str(&format!("spend by {}: not available yet ({e})\n", by.column())),
            }
        }
        self.poll_decisions(now).await;
        self.log_first_refusals();
        frame.push_str(&self.decisions_text());
        frame.push_str(&self.refusals_text());
        frame
    }

    async fn poll_decisions(&mut self, now: DateTime<Utc>) {
        let response = self
            .client
            .get(format!("{}/v1/decisions", self.gateway))
            .bearer_auth(&self.collector_token)
            .send()
            .await;
        let Ok(response) = response else { return };
        let Ok(body) = response.json::<serde_json::Value>().await else { return };
        let decisions: Vec<DecisionJson> =
            serde_json::from_value(body["decisions"].clone()).unwrap_or_default();
        for decision in decisions.into_iter().map(Decision::from) {
            let changed = self
                .decisions
                .get(&decision.subject)
                .is_none_or(|seen| seen.state != decision.state || seen.revision != decision.revision);
            if changed {
                self.log.push(format!("{} {}", now.format("%H:%M:%S"), describe(&decision)));
                self.decisions.insert(decision.subject.clone(), decision);
            }
        }
        let excess = self.log.len().saturating_sub(LOG_LINES);
        self.log.drain(..excess);
    }

    /// A log line at each person's first refusal.
    fn log_first_refusals(&mut self) {
        for (who, refused) in self.refusals.snapshot() {
            if self.refused_logged.insert(who.clone()) {
                self.log.push(format!(
                    "{} REFUSED {who}: {}",
                    refused.first_at.format("%H:%M:%S"),
                    refused.message
                ));
            }
        }
        let excess = self.log.len().saturating_sub(LOG_LINES);
        self.log.drain(..excess);
    }

    fn refusals_text(&self) -> String {
        let refusals = self.refusals.snapshot();
        let mut text =
            format!("requests refused at the gateway: {}\n", refusals.values().map(|r| r.count).sum::<u64>());
        for (who, refused) in &refusals {
            text.push_str(&format!("  {who}: {} refused; the latest: {}\n", refused.count, refused.message));
        }
        text
    }

    fn decisions_text(&self) -> String {
        let enforced: Vec<String> = self
            .decisions
            .values()
            .filter(|d| matches!(d.state, DecisionState::Block | DecisionState::Downgrade))
            .map(describe)
            .collect();
        let mut text = format!("decisions enforced at the gateway: {}\n", enforced.len());
        for line in enforced {
            text.push_str(&format!("  {line}\n"));
        }
        text.push_str("decision log (as the gateway applied them):\n");
        if self.log.is_empty() {
            text.push_str("  (none yet: the runaway agent starts after 15 s)\n");
        }
        for line in &self.log {
            text.push_str(&format!("  {line}\n"));
        }
        text
    }
}

/// One decision on one line, e.g. `BLOCK org=acme/user=ci-bot: $5.12 of $5.00 (ci-bot-daily)`.
pub fn describe(decision: &Decision) -> String {
    let state = match decision.state {
        DecisionState::Allow => "ALLOW",
        DecisionState::Warn => "WARN",
        DecisionState::Block => "BLOCK",
        DecisionState::Downgrade => "DOWNGRADE",
    };
    let limit =
        decision.limit_usd.map_or_else(|| "-".to_string(), |limit| format!("${}", report::cents(limit)));
    format!(
        "{state} {}: ${} of {limit} ({})",
        decision.subject,
        report::cents(decision.spent_usd),
        decision.budget_id.as_deref().unwrap_or("-"),
    )
}

fn spend_table(rows: &[SpendRow], by: ReportDimension) -> String {
    let mut table = Table::new();
    table.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
    table.set_header(vec!["org", by.column(), "requests", "unpriced", "usd"]);
    let number = |text: String| comfy_table::Cell::new(text).set_alignment(CellAlignment::Right);
    for row in rows.iter().take(ROWS) {
        table.add_row(vec![
            comfy_table::Cell::new(&row.org),
            comfy_table::Cell::new(if row.value.is_empty() { "(none)" } else { &row.value }),
            number(row.requests.to_string()),
            number(row.unpriced_requests.to_string()),
            number(report::cents(row.cost_usd)),
        ]);
    }
    let total = Usd(rows.iter().map(|row| row.cost_usd.0).sum());
    format!("spend today by {} (total ${}):\n{table}\n", by.column(), report::cents(total))
}
