//! `faregate report` against the real ClickHouse front (needs the local stack that
//! deploy/local/test starts): ledger rows with awkward exact costs go in, the binary's CSV and
//! JSON exports come out, and every amount equals the sum worked out from the rows, to the last
//! of 18 decimal places; rows outside the window or of another organisation stay out.

use std::collections::BTreeMap;
use std::process::{Command, Output};

use chrono::{NaiveDate, TimeDelta, Utc};
use faregate_core::clickhouse::LedgerRow;
use faregate_core::clickhouse::ledger::{CostBreakdown, KafkaPosition, Pricing};
use faregate_core::clickhouse::migrations;
use faregate_core::event::arbitrary;
use faregate_core::money::Usd;
use faregate_tests::{clickhouse_config, samples};
use rust_decimal::Decimal;

const TEAMS: [&str; 3] = ["infra", "web", ""];
const MODELS: [&str; 2] = ["claude-sonnet-4-5", "gpt-5"];

fn faregate(args: &[&str], url: &str, database: &str) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_faregate"));
    command.args(args).env_remove("FAREGATE_CONFIG");
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("FAREGATE__")) {
        command.env_remove(key);
    }
    command.env("FAREGATE__CLICKHOUSE__URL", url).env("FAREGATE__CLICKHOUSE__DATABASE", database);
    let output = command.output().expect("the faregate binary runs");
    assert!(output.status.success(), "faregate {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    output
}

/// Ledger rows of `day` and of the day before (outside the window), for two organisations.
fn ledger_rows(day: NaiveDate) -> Vec<LedgerRow> {
    samples(arbitrary::usage_event(), 60)
        .into_iter()
        .enumerate()
        .map(|(i, mut event)| {
            let index = i as i64;
            event.org = if i % 5 == 4 { "globex".into() } else { "acme".into() };
            event.team = Some(TEAMS[i % 3].to_string()).filter(|team| !team.is_empty());
            event.requested_model = MODELS[i % 2].into();
            event.served_model = None;
            let when = if i < 50 { day } else { day - TimeDelta::days(1) };
            event.occurred_at = when.and_hms_opt(1, 0, 0).unwrap().and_utc() + TimeDelta::minutes(index * 20);
            let tokens = &mut event.tokens;
            tokens.input = tokens.input.rem_euclid(1_000_000);
            tokens.output = tokens.output.rem_euclid(100_000);
            tokens.cache_read = tokens.cache_read.rem_euclid(100_000);
            tokens.cache_write_5m = tokens.cache_write_5m.rem_euclid(1_000);
            tokens.cache_write_1h = tokens.cache_write_1h.rem_euclid(1_000);
            tokens.reasoning = tokens.reasoning.rem_euclid(1_000);
            event.http_status = 200;
            event.latency_us = 1;
            event.ttfb_us = None;
            let pricing = if i % 7 == 3 {
                Pricing::Unpriced { reason: "no price".into() }
            } else {
                // Amounts that only add up exactly in 18 decimal places.
                let input =
                    Usd(Decimal::from_i128_with_scale(i128::from(index) * 123_456_789_012_345_679 + 1, 18));
                let cost = CostBreakdown {
                    input,
                    output: Usd("0.000000000000000003".parse().unwrap()),
                    ..Default::default()
                };
                Pricing::Priced { price_ref: "test/test@2026-01-01".into(), cost }
            };
            let position = KafkaPosition { topic: "usage".into(), partition: 0, offset: index };
            LedgerRow::new(&event, &pricing, &position, Utc::now())
        })
        .collect()
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Expected {
    requests: u64,
    unpriced: u64,
    tokens: u64,
    cost: Decimal,
}

/// The report worked out from the rows: (org, value) -> totals.
fn expected(
    rows: &[LedgerRow],
    day: NaiveDate,
    value: impl Fn(&LedgerRow) -> String,
) -> BTreeMap<(String, String), Expected> {
    let mut expected: BTreeMap<(String, String), Expected> = BTreeMap::new();
    for row in rows.iter().filter(|row| row.occurred_at.date_naive() == day) {
        let entry = expected.entry((row.org.clone(), value(row))).or_default();
        entry.requests += 1;
        entry.unpriced += u64::from(row.cost_total.is_none());
        entry.tokens += row.input_tokens
            + row.output_tokens
            + row.cache_read_tokens
            + row.cache_write_5m_tokens
            + row.cache_write_1h_tokens
            + row.reasoning_tokens;
        entry.cost += row.cost_total.map_or(Decimal::ZERO, |cost| cost.0);
    }
    expected
}

#[tokio::test]
async fn exports_are_exact_and_limited_to_the_window_and_org() {
    let config = clickhouse_config();
    migrations::apply(&config).await.unwrap();
    let day = (Utc::now() - TimeDelta::days(1)).date_naive();
    let rows = ledger_rows(day);
    let mut insert = config.client().insert::<LedgerRow>("usage_ledger").await.unwrap();
    for row in &rows {
        insert.write(row).await.unwrap();
    }
    insert.end().await.unwrap();
    let (from, to) = (day.to_string(), (day + TimeDelta::days(1)).to_string());
    let run = |args: &[&str]| {
        let output = faregate(args, &config.url, &config.database);
        String::from_utf8(output.stdout).unwrap()
    };

    // CSV by team, one organisation.
    let csv =
        run(&["report", "--by", "team", "--from", &from, "--to", &to, "--format", "csv", "--org", "acme"]);
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    assert_eq!(
        reader.headers().unwrap(),
        vec!["org", "team", "requests", "unpriced_requests", "tokens", "cost_usd"]
    );
    let mut found = BTreeMap::new();
    for record in reader.records() {
        let record = record.unwrap();
        let cost: Decimal = record[5].parse().unwrap();
        assert!(cost.scale() <= 18);
        found.insert(
            (record[0].to_string(), record[1].to_string()),
            Expected {
                requests: record[2].parse().unwrap(),
                unpriced: record[3].parse().unwrap(),
                tokens: record[4].parse().unwrap(),
                cost,
            },
        );
    }
    let mut by_team = expected(&rows, day, |row| row.team.clone());
    by_team.retain(|(org, _), _| org == "acme");
    assert_eq!(found, by_team, "{csv}");

    // JSON by model, every organisation.
    let json: serde_json::Value = serde_json::from_str(&run(&[
        "report", "--by", "model", "--from", &from, "--to", &to, "--format", "json",
    ]))
    .unwrap();
    assert_eq!(
        (json["by"].as_str(), json["from"].as_str(), json["to"].as_str()),
        (Some("model"), Some(&*from), Some(&*to))
    );
    let found: BTreeMap<(String, String), Expected> = json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let key = (row["org"].as_str().unwrap().to_string(), row["model"].as_str().unwrap().to_string());
            let totals = Expected {
                requests: row["requests"].as_u64().unwrap(),
                unpriced: row["unpriced_requests"].as_u64().unwrap(),
                tokens: row["tokens"].as_u64().unwrap(),
                cost: row["cost_usd"].as_str().unwrap().parse().unwrap(),
            };
            (key, totals)
        })
        .collect();
    assert_eq!(found, expected(&rows, day, |row| row.model.clone()));

    // The table: rounded to cents, with the exact total rounded once.
    let table = run(&["report", "--by", "team", "--from", &from, "--to", &to, "--org", "acme"]);
    let total: Decimal = by_team.values().map(|totals| totals.cost).sum();
    let cents = total.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    let total_line = table.lines().find(|line| line.contains("total")).unwrap_or_else(|| panic!("{table}"));
    assert!(total_line.contains(&format!("{cents:.2}")), "{table}");
    assert!(table.contains("(none)") && table.contains("infra"), "{table}");

    // A window with nothing in it is an empty export, not an error.
    let empty =
        run(&["report", "--by", "user", "--from", "2020-01-01", "--to", "2020-01-02", "--format", "csv"]);
    assert_eq!(empty, "org,user,requests,unpriced_requests,tokens,cost_usd\n");
}
