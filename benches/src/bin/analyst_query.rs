//! Analyst queries over a large ledger: how long the usual questions take over 10M+ ledger rows
//! spread across 30 days, each beside a baseline measured in the same run.
//!
//! Setup: a database of its own on the ClickHouse in `FAREGATE_TEST_CLICKHOUSE_URL` (locally chDB
//! behind the project's front), the real migrations, then `FAREGATE_ANALYST_ROWS` (default 10M)
//! synthetic ledger rows generated inside ClickHouse (`INSERT ... SELECT FROM numbers()`, in
//! chunks), so the materialized rollups fill exactly as they do from the processor. The rows
//! look like a 30-day month of a large organisation: 4 orgs, 40 teams, 5,000 users with two keys
//! each, 3 projects a team, 6 models and 5 tools (each user mostly on one of each), token
//! counts and exact Decimal costs.
//!
//! Measured (median of `FAREGATE_ANALYST_RUNS`, default 5, after one warm-up each):
//! - baseline: `count()` of the window's rows in the ledger (the least any query over them
//!   costs: reading one column's index and parts);
//! - the 30-day group-by straight on the ledger (spend by team; by user, 5,000 groups);
//! - the same questions through the analyst views on the rollups (`spend_by`,
//!   `top_spenders_today`), which is what `faregate report` and the dashboards run.
//!
//! The sums from the ledger and from the view are compared exactly (they must be equal).
//!
//! ```sh
//! cargo build --release -p faregate-benches --bin analyst-query
//! FAREGATE_TEST_CLICKHOUSE_URL=http://127.0.0.1:Q target/release/analyst-query
//! ```

// Timings and ratios are measurements printed for people; the money compared is exact.
#![allow(clippy::float_arithmetic)]

use faregate_benches::env_or;
use std::time::{Duration, Instant};

use chrono::{Days, Utc};
use faregate_core::clickhouse::{ClickHouseConfig, migrations};

/// The columns the generator fills; the rest take their defaults.
const COLUMNS: &str = "event_id, occurred_at, received_at, processed_at, source_kind, source_name, org, team, \
    user, key_id, provider, requested_model, served_model, model, endpoint, tool, session_id, request_id, project, \
    input_tokens, output_tokens, cache_read_tokens, cache_write_5m_tokens, usage_source, streaming, outcome, \
    http_status, latency_us, pricing_status, price_ref, cost_input, cost_output, cost_cache_read, \
    cost_cache_write_5m, cost_total, kafka_topic, kafka_partition, kafka_offset";

/// `INSERT ... SELECT` of rows `start..start+count`, spread over the 30 days before `end`.
fn generate_sql(start: u64, count: u64, end: &str) -> String {
    // Costs are exact decimals: tokens × a per-model price per million, divided by 10^6.
    format!(
        "INSERT INTO usage_ledger ({COLUMNS}) \
         SELECT generateUUIDv7(number), at, at, at, 'ingress', 'bench', org, team, user, key_id, provider, model, model, model, \
           'messages', tool, concat('s-', toString(intDiv(number, 40))), concat('fg-', toString(number)), project, \
           input, output, cache_read, cache_write, 'reported', true, 'ok', 200, 900000, 'priced', 'bench', \
           c_in, c_out, c_read, c_write, c_in + c_out + c_read + c_write, 'bench', 0, toInt64(number) \
         FROM ( \
           SELECT number, \
             toDateTime64('{end}', 6, 'UTC') - toIntervalSecond(1 + cityHash64(number, 1) % (30 * 86400 - 1)) AS at, \
             cityHash64(number, 4) % 5000 AS u, \
             ['acme', 'globex', 'initech', 'umbrella'][1 + u % 4] AS org, \
             concat('team-', toString(u % 40)) AS team, \
             concat('user-', toString(u)) AS user, \
             concat('k-', toString(u), '-', toString(cityHash64(number, 5) % 2)) AS key_id, \
             if(cityHash64(number, 6) % 10 < 7, u % 6, cityHash64(number, 6) % 6) AS m, \
             ['claude-opus-4-5', 'claude-sonnet-4-5', 'claude-haiku-4-5', 'gpt-5', 'gpt-5-mini', 'gemini-2.5-pro'][1 + m] AS model, \
             if(m < 3, 'anthropic', if(m < 5, 'openai', 'google')) AS provider, \
             ['claude-code', 'codex', 'cursor', 'sdk', 'other'][1 + if(cityHash64(number, 7) % 10 < 8, u % 5, cityHash64(number, 7) % 5)] AS tool, \
             concat('project-', toString((u % 40) * 3 + cityHash64(number, 8) % 3)) AS project, \
             cityHash64(number, 9) % 4000 AS input, cityHash64(number, 10) % 2000 AS output, \
             cityHash64(number, 11) % 60000 AS cache_read, cityHash64(number, 12) % 3000 AS cache_write, \
             [15, 3, 1, 1, 1, 2][1 + m] AS p_in, \
             toDecimal128(input * p_in, 18) / 1000000 AS c_in, \
             toDecimal128(output * p_in * 5, 18) / 1000000 AS c_out, \
             toDecimal128(cache_read * p_in, 18) / 10000000 AS c_read, \
             toDecimal128(cache_write * p_in * 5, 18) / 4000000 AS c_write \
           FROM numbers({start}, {count}) \
         )"
    )
}

async fn timed(client: &clickhouse::Client, sql: &str, runs: usize) -> (Duration, Vec<String>) {
    let run = || async {
        let started = Instant::now();
        let rows: Vec<String> = client
            .query(&format!("SELECT toString(tuple(*)) FROM ({sql})"))
            .fetch_all()
            .await
            .unwrap_or_else(|e| panic!("query failed: {e}\n{sql}"));
        (started.elapsed(), rows)
    };
    let (_, rows) = run().await;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        times.push(run().await.0);
    }
    times.sort();
    (times[times.len() / 2], rows)
}

#[tokio::main]
async fn main() {
    let Ok(url) = std::env::var("FAREGATE_TEST_CLICKHOUSE_URL") else {
        eprintln!(
            "FAREGATE_TEST_CLICKHOUSE_URL is not set: start the local stack with `deploy/local/up --dir \
             $(mktemp -d) --kafka-port 0 --clickhouse-port 0` and export it from the stack.env it writes"
        );
        std::process::exit(2);
    };
    let rows: u64 = env_or("FAREGATE_ANALYST_ROWS", 10_000_000);
    let runs: usize = env_or("FAREGATE_ANALYST_RUNS", 5).max(1);
    let chunk: u64 = env_or("FAREGATE_ANALYST_CHUNK", 1_000_000);
    let database = format!("analyst_{}", uuid::Uuid::now_v7().simple());
    let config =
        ClickHouseConfig { url: url.clone(), database: database.clone(), ..ClickHouseConfig::default() };
    migrations::apply(&config).await.expect("applying the migrations");
    let client = config.client();
    println!("analyst queries: {rows} ledger rows over 30 days in database {database} at {url}");
    println!("machine: 2 cores shared with anything else running; compare the ratios");

    let today = Utc::now().date_naive();
    let end = format!("{} 00:00:00", today.checked_add_days(Days::new(1)).unwrap_or(today));
    let from = today.checked_sub_days(Days::new(29)).unwrap_or(today).to_string();
    let to = today.checked_add_days(Days::new(1)).unwrap_or(today).to_string();
    let started = Instant::now();
    let mut done = 0;
    while done < rows {
        let count = chunk.min(rows - done);
        client.query(&generate_sql(done, count, &end)).execute().await.expect("generating ledger rows");
        done += count;
        eprint!("\r  generated {done} rows");
    }
    let load = started.elapsed();
    eprintln!();
    println!(
        "load: {rows} rows with their rollups in {:.1} s ({:.0} rows/s, INSERT ... SELECT inside ClickHouse)",
        load.as_secs_f64(),
        rows as f64 / load.as_secs_f64()
    );

    let window = format!(
        "occurred_at >= toDateTime64('{from} 00:00:00', 6, 'UTC') AND occurred_at < toDateTime64('{to} 00:00:00', 6, 'UTC')"
    );
    let queries: Vec<(&str, String)> = vec![
        (
            "baseline: count() of the window's ledger rows",
            format!("SELECT count() FROM usage_ledger WHERE {window}"),
        ),
        (
            "ledger: 30-day spend by team (40 groups)",
            format!(
                "SELECT org, team, sum(cost_total) AS cost, count() AS requests FROM usage_ledger WHERE {window} \
                 GROUP BY org, team ORDER BY cost DESC"
            ),
        ),
        (
            "ledger: 30-day spend by user (5,000 groups), top 20",
            format!(
                "SELECT org, user, sum(cost_total) AS cost FROM usage_ledger WHERE {window} \
                 GROUP BY org, user ORDER BY cost DESC LIMIT 20"
            ),
        ),
        (
            "ledger: cache-read savings by model, 30 days",
            format!(
                "SELECT model, sum(cache_read_tokens) AS tokens, sum(cost_cache_read) AS cost FROM usage_ledger \
                 WHERE {window} GROUP BY model ORDER BY cost DESC"
            ),
        ),
        (
            "view: spend_by(team) over the day rollup",
            format!(
                "SELECT org, value, cost_usd FROM spend_by(dimension = 'team', from = '{from}', to = '{to}') ORDER BY cost_usd DESC"
            ),
        ),
        (
            "view: spend_by(user), top 20",
            format!(
                "SELECT org, value, cost_usd FROM spend_by(dimension = 'user', from = '{from}', to = '{to}') \
                 ORDER BY cost_usd DESC LIMIT 20"
            ),
        ),
        ("view: top_spenders_today", "SELECT * FROM top_spenders_today".to_string()),
    ];
    let mut baseline = None;
    let mut results = Vec::new();
    println!("\n{:<56} {:>10} {:>9} {:>7}", "query (median of runs)", "time", "vs base", "rows");
    for (name, sql) in &queries {
        let (time, out) = timed(&client, sql, runs).await;
        let base = *baseline.get_or_insert(time);
        println!(
            "{name:<56} {:>8.1} ms {:>8.1}x {:>7}",
            time.as_secs_f64() * 1000.0,
            time.as_secs_f64() / base.as_secs_f64(),
            out.len()
        );
        results.push(out);
    }
    let count: String = results[0].first().cloned().unwrap_or_default();
    assert_eq!(
        count.trim_matches(|c| c == '(' || c == ')'),
        rows.to_string(),
        "every generated row is in the window"
    );

    // The ledger and the rollup view must agree to the last decimal.
    let exact = |sql: String| {
        let client = client.clone();
        async move { client.query(&sql).fetch_one::<String>().await.expect("sum query") }
    };
    let ledger_sum =
        exact(format!("SELECT toString(assumeNotNull(sum(cost_total))) FROM usage_ledger WHERE {window}"))
            .await;
    let view_sum = exact(format!(
        "SELECT toString(assumeNotNull(sum(cost_usd))) FROM spend_by(dimension = 'team', from = '{from}', to = '{to}')"
    ))
    .await;
    println!("\nexact total: ledger ${ledger_sum}, view ${view_sum}");
    assert_eq!(ledger_sum, view_sum, "the rollup view must equal the ledger exactly");
    client.query(&format!("DROP DATABASE IF EXISTS {database}")).execute().await.ok();
}
