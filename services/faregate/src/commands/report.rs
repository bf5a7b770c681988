//! `faregate report`: spend by one dimension (team, user, tool, model, project) over a window of
//! whole UTC days, read from the ClickHouse `spend_by` view (hour rollups), printed as a table,
//! CSV or JSON.
//!
//! Money is read exactly (`Decimal(38, 18)` as an integer of 10^-18 dollars). The table rounds
//! to cents for reading, half away from zero; CSV and JSON carry the exact amount as a string
//! (trailing zeros dropped), so a finance export sums to the ledger's total to the last digit.

use anyhow::Context as _;
use chrono::{Datelike as _, NaiveDate, TimeDelta};
use comfy_table::{CellAlignment, Table};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Deserialize;

use crate::AppConfig;
use crate::cli::{ReportArgs, ReportDimension, ReportFormat, ReportWindow};
use faregate_core::clickhouse::ClickHouseConfig;
use faregate_core::money::Usd;

/// One line of a report: spend of one value of the dimension within one organisation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, clickhouse::Row)]
pub struct SpendRow {
    pub org: String,
    /// The dimension's value (`""` when the requests did not carry it).
    pub value: String,
    pub requests: u64,
    pub unpriced_requests: u64,
    pub tokens: u64,
    #[serde(with = "faregate_core::money::ch_decimal")]
    pub cost_usd: Usd,
}

pub async fn report(config: &AppConfig, args: ReportArgs) -> anyhow::Result<()> {
    let today = chrono::Utc::now().date_naive();
    let (from, to) = window(&args, today)?;
    let rows = fetch(&config.clickhouse, args.by, from, to, args.org.as_deref())
        .await
        .with_context(|| format!("reading spend_by from {}", config.clickhouse.url))?;
    print!("{}", render(&rows, args.by, args.format, from, to)?);
    Ok(())
}

/// The days `[from, to)` of a report: `--from/--to` as given, or a window ending with `today`.
pub fn window(args: &ReportArgs, today: NaiveDate) -> anyhow::Result<(NaiveDate, NaiveDate)> {
    let tomorrow = today + TimeDelta::days(1);
    let (from, to) = match (args.from, args.to, args.window.unwrap_or(ReportWindow::Month)) {
        (Some(from), Some(to), _) => (from, to),
        (_, _, ReportWindow::Today) => (today, tomorrow),
        (_, _, ReportWindow::Days7) => (today - TimeDelta::days(6), tomorrow),
        (_, _, ReportWindow::Days30) => (today - TimeDelta::days(29), tomorrow),
        (_, _, ReportWindow::Month) => (today.with_day(1).unwrap_or(today), tomorrow),
    };
    anyhow::ensure!(from < to, "--from {from} must be before --to {to} (--to is exclusive)");
    Ok((from, to))
}

/// The rows of `spend_by` for `[from, to)`, most expensive first.
pub async fn fetch(
    clickhouse: &ClickHouseConfig,
    by: ReportDimension,
    from: NaiveDate,
    to: NaiveDate,
    org: Option<&str>,
) -> anyhow::Result<Vec<SpendRow>> {
    let org_filter = if org.is_some() { "WHERE org = ?" } else { "" };
    let sql = format!(
        "SELECT org, value, toUInt64(requests) AS requests, toUInt64(unpriced_requests) AS unpriced_requests, \
         toUInt64(tokens) AS tokens, toDecimal128(cost_usd, 18) AS cost_usd \
         FROM spend_by(dimension = ?, from = ?, to = ?) {org_filter} \
         ORDER BY cost_usd DESC, org, value"
    );
    let mut query = clickhouse
        .client()
        .query(&sql)
        .bind(by.column())
        .bind(format!("{from} 00:00:00"))
        .bind(format!("{to} 00:00:00"));
    if let Some(org) = org {
        query = query.bind(org);
    }
    Ok(query.fetch_all::<SpendRow>().await?)
}

/// The report as text in `format`.
pub fn render(
    rows: &[SpendRow],
    by: ReportDimension,
    format: ReportFormat,
    from: NaiveDate,
    to: NaiveDate,
) -> anyhow::Result<String> {
    match format {
        ReportFormat::Table => Ok(table(rows, by, from, to)),
        ReportFormat::Csv => csv(rows, by),
        ReportFormat::Json => json(rows, by, from, to),
    }
}

/// The exact amount as text, with no trailing zeros.
pub fn exact(amount: Usd) -> String {
    amount.0.normalize().to_string()
}

/// The amount rounded to cents (half away from zero), always with two decimals.
pub fn cents(amount: Usd) -> String {
    let mut rounded: Decimal = amount.0.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    rounded.rescale(2);
    rounded.to_string()
}

fn table(rows: &[SpendRow], by: ReportDimension, from: NaiveDate, to: NaiveDate) -> String {
    let mut table = Table::new();
    table.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    table.set_header(vec!["org", by.column(), "requests", "unpriced", "tokens", "usd"]);
    let number = |text: String| comfy_table::Cell::new(text).set_alignment(CellAlignment::Right);
    let named = |value: &str| if value.is_empty() { "(none)".to_string() } else { value.to_string() };
    for row in rows {
        table.add_row(vec![
            comfy_table::Cell::new(named(&row.org)),
            comfy_table::Cell::new(named(&row.value)),
            number(row.requests.to_string()),
            number(row.unpriced_requests.to_string()),
            number(row.tokens.to_string()),
            number(cents(row.cost_usd)),
        ]);
    }
    let total = Usd(rows.iter().map(|row| row.cost_usd.0).sum());
    table.add_row(vec![
        comfy_table::Cell::new("total"),
        comfy_table::Cell::new(""),
        number(rows.iter().map(|row| row.requests).sum::<u64>().to_string()),
        number(rows.iter().map(|row| row.unpriced_requests).sum::<u64>().to_string()),
        number(rows.iter().map(|row| row.tokens).sum::<u64>().to_string()),
        number(cents(total)),
    ]);
    let last_day = to - TimeDelta::days(1);
    format!("spend by {} from {from} to {last_day} (UTC, inclusive), US dollars\n{table}\n", by.column())
}

fn csv(rows: &[SpendRow], by: ReportDimension) -> anyhow::Result<String> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(["org", by.column(), "requests", "unpriced_requests", "tokens", "cost_usd"])?;
    for row in rows {
        writer.write_record([
            row.org.as_str(),
            row.value.as_str(),
            &row.requests.to_string(),
            &row.unpriced_requests.to_string(),
            &row.tokens.to_string(),
            &exact(row.cost_usd),
        ])?;
    }
    Ok(String::from_utf8(writer.into_inner().map_err(|e| anyhow::anyhow!("writing CSV: {e}"))?)?)
}

fn json(rows: &[SpendRow], by: ReportDimension, from: NaiveDate, to: NaiveDate) -> anyhow::Result<String> {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            let mut object = serde_json::Map::new();
            object.insert("org".into(), row.org.clone().into());
            object.insert(by.column().into(), row.value.clone().into());
            object.insert("requests".into(), row.requests.into());
            object.insert("unpriced_requests".into(), row.unpriced_requests.into());
            object.insert("tokens".into(), row.tokens.into());
            object.insert("cost_usd".into(), exact(row.cost_usd).into());
            serde_json::Value::Object(object)
        })
        .collect();
    let report = serde_json::json!({
        "by": by.column(),
        "from": from.to_string(),
        "to": to.to_string(),
        "currency": "USD",
        "rows": rows,
    });
    Ok(format!("{}\n", serde_json::to_string_pretty(&report)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(window: Option<ReportWindow>, from: Option<&str>, to: Option<&str>) -> ReportArgs {
        ReportArgs {
            by: ReportDimension::Team,
            from: from.map(|day| day.parse().unwrap()),
            to: to.map(|day| day.parse().unwrap()),
            window,
            format: ReportFormat::Table,
            org: None,
        }
    }

    fn day(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    #[test]
    fn windows_end_with_today_included() {
        let today = day("2026-11-23");
        let cases = [
            (None, ("2026-11-01", "2026-11-24")),
            (Some(ReportWindow::Today), ("2026-11-23", "2026-11-24")),
            (Some(ReportWindow::Days7), ("2026-11-17", "2026-11-24")),
            (Some(ReportWindow::Days30), ("2026-10-25", "2026-11-24")),
            (Some(ReportWindow::Month), ("2026-11-01", "2026-11-24")),
        ];
        for (window, (from, to)) in cases {
            assert_eq!(window_of(args(window, None, None), today), (day(from), day(to)), "{window:?}");
        }
        let given = args(None, Some("2026-10-01"), Some("2026-11-01"));
        assert_eq!(window_of(given, today), (day("2026-10-01"), day("2026-11-01")));
        assert!(window(&args(None, Some("2026-11-01"), Some("2026-11-01")), today).is_err());
    }

    fn window_of(args: ReportArgs, today: NaiveDate) -> (NaiveDate, NaiveDate) {
        window(&args, today).unwrap()
    }

    fn row(value: &str, cost: &str) -> SpendRow {
        SpendRow {
            org: "acme".into(),
            value: value.into(),
            requests: 3,
            unpriced_requests: 1,
            tokens: 1000,
            cost_usd: Usd(cost.parse().unwrap()),
        }
    }

    #[test]
    fn money_is_exact_in_exports_and_rounded_only_in_the_table() {
        assert_eq!(cents(Usd("0.005".parse().unwrap())), "0.01");
        assert_eq!(cents(Usd("-0.005".parse().unwrap())), "-0.01");
        assert_eq!(cents(Usd("12".parse().unwrap())), "12.00");
        assert_eq!(exact(Usd("1.230000000000000000".parse().unwrap())), "1.23");

        let rows = [row("infra", "1.004999999999999999"), row("", "0.000000000000000001")];
        let (from, to) = (day("2026-11-01"), day("2026-12-01"));
        let table = render(&rows, ReportDimension::Team, ReportFormat::Table, from, to).unwrap();
        assert!(
            table.contains("1.00") && table.contains("(none)") && table.contains("2026-11-30"),
            "{table}"
        );
        let csv = render(&rows, ReportDimension::Team, ReportFormat::Csv, from, to).unwrap();
        assert_eq!(
            csv,
            "org,team,requests,unpriced_requests,tokens,cost_usd\n\
             acme,infra,3,1,1000,1.004999999999999999\nacme,,3,1,1000,0.000000000000000001\n"
        );
        let json: serde_json::Value = serde_json::from_str(
            &render(&rows, ReportDimension::Team, ReportFormat::Json, from, to).unwrap(),
        )
        .unwrap();
        assert_eq!(json["rows"][0]["cost_usd"], "1.004999999999999999");
        assert_eq!(json["rows"][1]["team"], "");
        assert_eq!((json["from"].as_str(), json["to"].as_str()), (Some("2026-11-01"), Some("2026-12-01")));
    }
}
