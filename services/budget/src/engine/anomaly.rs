//! Tripwires on spend that no budget may cover: a key's daily spend far above its recent average,
//! a key burning more than $X in one hour, one session spending more than $Y within N minutes,
//! and a key suddenly sending most of its requests to a much pricier model.
//!
//! Contract: statistics are derived from the store's exact changes (UTC days and hours), so
//! replays do not inflate them. Each tripwire raises at most one alert per subject and period
//! (day, hour or session); the caller deduplicates by alert key and period.
//!
//! Runaway sessions read the processor's per-session aggregates: absolute totals per (org,
//! session, UTC minute) with `session_id` set and `bucket_width = MINUTE`, carrying the session's
//! team, user and key (see the processor's `session` module). A newer revision of a minute
//! replaces the older one; the session's spend is the sum of its minutes within the last
//! `session_minutes` (ending with the latest minute seen). Once per session.
//!
//! Limits: the spend topic carries hourly totals per subject, so the burn rate is per UTC clock
//! hour, not a sliding 60 minutes.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, TimeDelta, Utc};
use rust_decimal::Decimal;

use faregate_core::event::{AlertKind, SpendAggregate};
use faregate_core::money::Usd;

use super::store::{Change, Dims, KEY, MODEL, ORG, Sym, USER};

/// Tripwire settings (see `BudgetConfig::anomaly`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnomalySettings {
    /// A key's spend today above this many times its average day over the last 7 days.
    pub spike_factor: Decimal,
    /// ... and at least this much today (quiet keys do not page anyone).
    pub spike_min_usd: Decimal,
    /// A key spending more than this in one UTC hour; `None` turns it off.
    pub burn_rate_usd_per_hour: Option<Decimal>,
    /// One session spending more than this within `session_minutes`; `None` turns it off.
    pub session_usd: Option<Decimal>,
    pub session_minutes: u32,
    /// A model taking at least this share (percent) of a key's requests today ...
    pub mix_share_pct: u32,
    /// ... costing at least this many times the key's average cost per request of the last 7 days.
    pub mix_price_ratio: Decimal,
    /// ... once the key sent at least this many requests today.
    pub mix_min_requests: i64,
}

impl Default for AnomalySettings {
    fn default() -> Self {
        AnomalySettings {
            spike_factor: Decimal::from(3),
            spike_min_usd: Decimal::from(10),
            burn_rate_usd_per_hour: None,
            session_usd: None,
            session_minutes: 10,
            mix_share_pct: 60,
            mix_price_ratio: Decimal::from(3),
            mix_min_requests: 20,
        }
    }
}

/// A tripwire that fired: what, on whom, for which period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tripped {
    pub kind: AlertKind,
    pub org: Sym,
    pub who: Who,
    /// The model a model-mix drift is about.
    pub model: Option<Sym>,
    pub period_start: DateTime<Utc>,
    pub spent: Usd,
    pub threshold: Option<Usd>,
    pub detail: String,
}

/// Whom a tripwire is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    Key(Sym),
    User(Sym),
    /// A session, with the attribution its aggregates carry (org, team, user, key, ...).
    Session {
        id: String,
        dims: Dims,
    },
}

const HISTORY_DAYS: i32 = 7;

#[derive(Debug, Default)]
struct KeyStats {
    /// The latest hour seen and its cost.
    hour: (i32, Decimal),
    /// (day, model, requests, cost), last 8 days.
    mix: Vec<(i32, Sym, i64, Decimal)>,
}

/// Minute -> (cost, revision) of one session.
type SessionMinutes = BTreeMap<i64, (Decimal, i64)>;

#[derive(Debug, Default)]
pub struct Anomalies {
    /// (org, key or user) packed into a u64 -> index into `stats`.
    keys: HashMap<u64, u32>,
    stats: Vec<KeyStats>,
    /// (org, session) -> minute -> (cost, revision).
    sessions: HashMap<(Sym, Box<str>), SessionMinutes>,
}

fn day_of(hour: i32) -> i32 {
    hour.div_euclid(24)
}

impl Anomalies {
    /// Fold a store change in; returns what tripped (when `check`).
    pub fn observe(&mut self, change: &Change, settings: &AnomalySettings, check: bool) -> Vec<Tripped> {
        let d = &change.dims;
        let (is_key, id) = if d[KEY] != 0 { (true, d[KEY]) } else { (false, d[USER]) };
        if id == 0 {
            return Vec::new();
        }
        let packed = (u64::from(d[ORG]) << 33) | (u64::from(is_key) << 32) | u64::from(id);
        let next = self.stats.len() as u32;
        let index = *self.keys.entry(packed).or_insert(next);
        if index == next {
            self.stats.push(KeyStats::default());
        }
        let stats = &mut self.stats[index as usize];
        let day = day_of(change.hour);
        if change.hour > stats.hour.0 {
            stats.hour = (change.hour, Decimal::ZERO);
        }
        if change.hour == stats.hour.0 {
            stats.hour.1 += change.cost_delta;
        }
        match stats.mix.iter_mut().find(|(dd, m, ..)| *dd == day && *m == d[MODEL]) {
            Some(row) => {
                row.2 += change.requests_delta;
                row.3 += change.cost_delta;
            }
            None => stats.mix.push((day, d[MODEL], change.requests_delta, change.cost_delta)),
        }
        stats.mix.retain(|(dd, ..)| *dd >= day - HISTORY_DAYS);
        if !check {
            return Vec::new();
        }
        let who = if is_key { Who::Key(id) } else { Who::User(id) };
        let mut tripped = Vec::new();
        let day_start = super::store::hour_start(day * 24);
        // Spend spike: today vs the average day of the history.
        let today: Decimal = stats.mix.iter().filter(|r| r.0 == day).map(|r| r.3).sum();
        let history: Decimal =
            stats.mix.iter().filter(|r| r.0 < day && r.0 >= day - HISTORY_DAYS).map(|r| r.3).sum();
        let history_days = stats.mix.iter().any(|r| r.0 < day);
        if history_days && today >= settings.spike_min_usd {
            let average = history / Decimal::from(HISTORY_DAYS);
            if average > Decimal::ZERO && today > average * settings.spike_factor {
                tripped.push(Tripped {
                    kind: AlertKind::SpendSpike,
                    org: d[ORG],
                    who: who.clone(),
                    model: None,
                    period_start: day_start,
                    spent: Usd(today),
                    threshold: Some(Usd((average * settings.spike_factor).round_dp(2))),
                    detail: format!(
                        "spent ${} today (UTC), {}x its 7-day average of ${}",
                        today.round_dp(2),
                        (today / average).round_dp(1),
                        average.round_dp(2)
                    ),
                });
            }
        }
        // Burn rate in the current hour.
        if let Some(limit) = settings.burn_rate_usd_per_hour
            && change.hour == stats.hour.0
            && stats.hour.1 > limit
        {
            tripped.push(Tripped {
                kind: AlertKind::BurnRate,
                org: d[ORG],
                who: who.clone(),
                model: None,
                period_start: super::store::hour_start(change.hour),
                spent: Usd(stats.hour.1),
                threshold: Some(Usd(limit)),
                detail: format!("spent ${} in one hour (limit ${limit}/hour)", stats.hour.1.round_dp(2)),
            });
        }
        // Model-mix drift: a model dominating today's requests at a much higher cost per request.
        let requests_today: i64 = stats.mix.iter().filter(|r| r.0 == day).map(|r| r.2).sum();
        if requests_today >= settings.mix_min_requests
            && let Some(top) = stats.mix.iter().filter(|r| r.0 == day).max_by_key(|r| r.2)
            && top.2 * 100 >= i64::from(settings.mix_share_pct) * requests_today
            && top.2 > 0
        {
            let (past_requests, past_cost) = stats
                .mix
                .iter()
                .filter(|r| r.0 < day)
                .fold((0i64, Decimal::ZERO), |(n, c), r| (n + r.2, c + r.3));
            let past_share_of_top: i64 =
                stats.mix.iter().filter(|r| r.0 < day && r.1 == top.1).map(|r| r.2).sum();
            if past_requests > 0 && past_cost > Decimal::ZERO && past_share_of_top * 2 < past_requests {
                let before = past_cost / Decimal::from(past_requests);
                let now = top.3 / Decimal::from(top.2);
                if now >= before * settings.mix_price_ratio {
                    tripped.push(Tripped {
                        kind: AlertKind::ModelMixDrift,
                        org: d[ORG],
                        who: who.clone(),
                    model: None,
                        period_start: day_start,
                        spent: Usd(top.3),
                        threshold: None,
                        detail: format!(
                            "{}% of today's requests go to one model at ${} per request, {}x the 7-day average of ${}",
                            top.2 * 100 / requests_today,
                            now.round_dp(4),
                            (now / before).round_dp(1),
                            before.round_dp(4)
                        ),
                    });
                }
            }
        }
        tripped
    }

    /// Fold a per-session minute aggregate (attributed to `dims`) in; returns a runaway session,
    /// if it is one.
    pub fn observe_session(
        &mut self,
        dims: Dims,
        a: &SpendAggregate,
        settings: &AnomalySettings,
        check: bool,
    ) -> Option<Tripped> {
        let session = a.session_id.as_deref()?;
        let org = dims[ORG];
        let minutes = self.sessions.entry((org, session.into())).or_default();
        let minute = a.bucket_start.timestamp().div_euclid(60);
        let held = minutes.entry(minute).or_insert((Decimal::ZERO, i64::MIN));
        if held.1 >= a.revision {
            return None;
        }
        *held = (a.cost_usd.0, a.revision);
        let window = i64::from(settings.session_minutes.max(1));
        let last = *minutes.keys().next_back()?;
        minutes.retain(|m, _| *m > last - window.max(60));
        let limit = settings.session_usd?;
        let spent: Decimal = minutes.range(last - window + 1..=last).map(|(_, (c, _))| *c).sum();
        if !check || spent <= limit {
            return None;
        }
        let first = DateTime::from_timestamp((last - window + 1) * 60, 0).unwrap_or_default();
        Some(Tripped {
            kind: AlertKind::RunawaySession,
            org,
            who: Who::Session { id: session.to_string(), dims },
            model: None,
            // Once per session: the period is fixed.
            period_start: DateTime::<Utc>::UNIX_EPOCH,
            spent: Usd(spent),
            threshold: Some(Usd(limit)),
            detail: format!(
                "session spent ${} within {window} minutes (limit ${limit}) ending {}",
                spent.round_dp(2),
                (first + TimeDelta::minutes(window)).format("%H:%M UTC")
            ),
        })
    }

    /// Drop sessions idle since before `cutoff`.
    pub fn prune_sessions(&mut self, cutoff: DateTime<Utc>) {
        let minute = cutoff.timestamp().div_euclid(60);
        self.sessions.retain(|_, m| m.keys().next_back().is_some_and(|last| *last >= minute));
    }

    pub fn heap_bytes(&self) -> usize {
        self.keys.capacity() * (8 + 4 + 1)
            + self.stats.capacity() * size_of::<KeyStats>()
            + self
                .stats
                .iter()
                .map(|k| k.mix.capacity() * size_of::<(i32, Sym, i64, Decimal)>())
                .sum::<usize>()
    }
}
