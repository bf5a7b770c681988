//! Re-pricing a time range after the catalog was fixed (`faregate reprice --from --to`).
//!
//! For each UTC day of the range: read the day's ledger rows (FINAL), price them again, delete
//! the day's buckets from the three rollup tables, and insert the re-priced rows as new versions
//! (the ledger keeps the newest version of an event id; the materialized views rebuild the day's
//! rollups from them). Then the changed spend totals are republished.
//!
//! Run it over days that no processor is still writing to (a re-price of a day that receives
//! new events at the same time can count those events twice in the rollups). An interrupted run
//! is repaired by running it again: every step is idempotent for a whole day.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};

use crate::Pricer;
use crate::aggregate::BucketKey;
use crate::ledger::{LedgerError, datetime_literal, second_literal};
use faregate_core::clickhouse::LedgerRow;
use faregate_core::clickhouse::ledger::PricingStatus;
use faregate_core::money::Usd;

/// The rollup tables a re-price rebuilds.
pub use crate::ledger::rollups::ROLLUPS;

/// What a re-price found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepriceReport {
    pub days: u32,
    pub rows: u64,
    /// Rows unpriced before and priced now.
    pub newly_priced: u64,
    /// Rows still unpriced.
    pub unpriced: u64,
    /// Rows whose total cost changed.
    pub changed: u64,
    pub cost_before: Usd,
    pub cost_after: Usd,
    /// The (subject, hour) buckets whose totals changed and were republished.
    pub buckets: Vec<BucketKey>,
}

fn day_start(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

/// Re-price `[from, to)` (whole UTC days) with `pricer`; with `dry_run` only report.
pub async fn reprice(
    client: &clickhouse::Client,
    pricer: &dyn Pricer,
    from: NaiveDate,
    to: NaiveDate,
    dry_run: bool,
) -> Result<RepriceReport, LedgerError> {
    if to <= from {
        return Err(LedgerError::Unavailable(format!("--to {to} must be after --from {from}")));
    }
    let mut report = RepriceReport::default();
    let mut buckets = std::collections::BTreeSet::new();
    let mut day = from;
    while day < to {
        let (start, end) = (day_start(day), day_start(day) + TimeDelta::days(1));
        let rows: Vec<LedgerRow> = client
            .query(&format!(
                "SELECT ?fields FROM usage_ledger FINAL WHERE occurred_at >= {} AND occurred_at < {}",
                datetime_literal(start),
                datetime_literal(end)
            ))
            .fetch_all()
            .await?;
        let now = faregate_core::time::now_micros();
        let repriced: Vec<LedgerRow> = rows
            .iter()
            .map(|row| {
                let event = row.to_event();
                LedgerRow::new(&event, &pricer.price(&event), &row.position(), now)
            })
            .collect();
        for (old, new) in rows.iter().zip(&repriced) {
            report.rows += 1;
            report.cost_before = Usd(report.cost_before.0 + old.cost_total.unwrap_or_default().0);
            report.cost_after = Usd(report.cost_after.0 + new.cost_total.unwrap_or_default().0);
            if new.pricing_status == PricingStatus::Unpriced {
                report.unpriced += 1;
            } else if old.pricing_status == PricingStatus::Unpriced {
                report.newly_priced += 1;
            }
            if old.cost_total != new.cost_total {
                report.changed += 1;
                buckets.insert(BucketKey::of(new));
            }
        }
        if !dry_run && !rows.is_empty() {
            for table in ROLLUPS.map(|r| r.table) {
                client
                    .query(&format!(
                        "ALTER TABLE {table} DELETE WHERE bucket >= {} AND bucket < {}",
                        second_literal(start),
                        second_literal(end)
                    ))
                    .with_setting("mutations_sync", "2")
                    .execute()
                    .await?;
            }
            let mut insert = client.insert::<LedgerRow>("usage_ledger").await?;
            for row in &repriced {
                insert.write(row).await?;
            }
            insert.end().await?;
        }
        report.days += 1;
        day = day.succ_opt().unwrap_or(to);
    }
    report.buckets = buckets.into_iter().collect();
    Ok(report)
}
