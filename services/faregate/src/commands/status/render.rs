//! The status report as a table for people: one row per thing checked, `ok`, `BLIND` or `info`,
//! and what was found.

use comfy_table::Table;

use super::Report;

fn age(ms: Option<i64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms < 10_000 => format!("{}.{}s ago", ms / 1000, ms % 1000 / 100),
        Some(ms) if ms < 3_600_000 => format!("{}s ago", ms / 1000),
        Some(ms) => format!("{}h ago", ms / 3_600_000),
    }
}

/// A cause's code as the JSON report spells it.
fn code(cause: &super::Cause) -> String {
    serde_json::to_value(cause).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

pub fn table(report: &Report) -> String {
    let mut table = Table::new();
    table.set_header(["check", "state", "detail"]);
    let verdict = |ok: bool| if ok { "ok" } else { "BLIND" };
    let b = &report.broker;
    table.add_row([
        format!("Kafka broker ({})", b.brokers),
        verdict(b.reachable).into(),
        b.error.clone().unwrap_or_else(|| "answers".into()),
    ]);
    for g in &report.groups {
        let name = format!("{} group {} ({})", g.role, g.group, g.topic);
        if let Some(error) = &g.error {
            table.add_row([name, "BLIND".into(), error.clone()]);
            continue;
        }
        let members: Vec<String> =
            g.members.iter().map(|m| format!("{}@{} {:?}", m.client_id, m.host, m.partitions)).collect();
        table.add_row([
            name,
            "info".into(),
            format!(
                "state {}, {} member(s){}{}, lag {}{}",
                g.state.as_deref().unwrap_or("?"),
                g.members.len(),
                if members.is_empty() { "" } else { ": " },
                members.join(", "),
                g.lag.map_or("?".into(), |l| l.to_string()),
                g.describe_error.as_ref().map_or(String::new(), |e| format!(" ({e})")),
            ),
        ]);
        for p in &g.partitions {
            let described = g.describe_error.is_none();
            let ok = p.owner.is_some() || p.lag == Some(0) || !described;
            table.add_row([
                format!("  {} partition {}", g.role, p.partition),
                verdict(ok).into(),
                format!(
                    "owner {}, high {}, position {}, lag {}",
                    p.owner.as_deref().unwrap_or(if described { "none" } else { "unknown" }),
                    p.high_watermark,
                    p.position.map_or("-".into(), |o| o.to_string()),
                    p.lag.map_or("?".into(), |l| l.to_string())
                ),
            ]);
        }
    }
    let h = &report.heartbeat;
    table.add_row([
        format!("enforcement heartbeat ({})", h.topic),
        verdict(h.live).into(),
        match &h.error {
            Some(error) => error.clone(),
            None => format!(
                "watermark {} (limit {}s), {} spend partition(s), uncovered {:?}",
                age(h.age_ms),
                h.stale_after_secs,
                h.partition_count,
                h.uncovered_partitions
            ),
        },
    ]);
    for i in &h.instances {
        table.add_row([
            format!("  budget instance {}", i.instance_id),
            "info".into(),
            format!("heartbeat {} (#{}), partitions {:?}", age(Some(i.age_ms)), i.sequence, i.partitions),
        ]);
    }
    let d = &report.dead_letters;
    table.add_row([
        format!("dead letters ({})", d.topic),
        "info".into(),
        d.records.map_or_else(|| d.error.clone().unwrap_or_default(), |n| format!("{n} record(s)")),
    ]);
    let l = &report.ledger;
    table.add_row([
        "ClickHouse ledger".into(),
        verdict(l.reachable).into(),
        match &l.error {
            Some(error) => error.clone(),
            None if l.last_write.is_none() => "reachable; no rows yet".into(),
            None => format!("last write {}", age(l.age_ms)),
        },
    ]);
    for i in &report.ingress {
        let m = &i.metrics;
        let ok = i.reachable
            && m.spool_full != Some(true)
            && m.enforcement_stale != Some(true)
            && m.demand_failing != Some(true);
        table.add_row([
            format!("ingress {}", i.url),
            verdict(ok).into(),
            match &i.error {
                Some(error) => error.clone(),
                None => format!(
                    "spool backlog {} bytes{}, enforcement {}{}",
                    m.spool_pending_bytes.map_or("?".into(), |b| (b as u64).to_string()),
                    if m.spool_full == Some(true) { " (FULL)" } else { "" },
                    match m.enforcement_stale {
                        Some(true) => "stale",
                        Some(false) => "live",
                        None => "?",
                    },
                    if m.demand_failing == Some(true) { ", demand reports FAILING" } else { "" }
                ),
            },
        ]);
    }
    let mut out = format!("{table}\n");
    if report.live {
        out.push_str("live: metering and enforcement are running\n");
    } else {
        out.push_str("BLIND:\n");
        for (problem, cause) in report.problems.iter().zip(&report.causes) {
            out.push_str(&format!("  - {problem} [{}]\n", code(cause)));
        }
    }
    out
}
