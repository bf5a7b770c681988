//! `GET /v1/me`: what a virtual key may see of itself, with the same authentication as the
//! proxied routes. The key's attribution, every budget covering it (from the headroom the
//! gateway already holds: no I/O), the tightest one, and today's and this month's spend where a
//! calendar day or month budget gives it (the spend of that budget's scope, which may be wider
//! than the key: the answer says which scope). `?format=statusline` answers one line of text
//! for an editor's status line, e.g. `$3.20 of $10.00 today`. With reservations on, each budget
//! also says what this replica holds against it: open reservations (`reserved_usd`) and costs
//! settled here that the headroom does not show yet (`settled_unreflected_usd`), and its share of
//! the remaining (`share_usd`: by demand, or the remaining over `ingress.reservation.replicas`).

use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use chrono::SecondsFormat;
use rust_decimal::RoundingStrategy;
use serde::Deserialize;
use serde_json::{Value, json};

use faregate_core::event::Headroom;
use faregate_core::money::Usd;

use crate::config::Provider;
use crate::gateway::Gateway;
use crate::headroom::dollars;

#[derive(Debug, Default, Deserialize)]
pub struct MeQuery {
    /// `json` (default) or `statusline`.
    #[serde(default)]
    format: Option<String>,
}

fn rfc3339(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn cents(amount: Usd) -> String {
    let mut d = amount.0.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    d.rescale(2);
    if d.is_sign_negative() { format!("-${}", d.abs()) } else { format!("${d}") }
}

/// The most specific calendar budget of `period` (most pinned dimensions; then the tightest).
fn calendar<'a>(budgets: &'a [Headroom], period: &str) -> Option<&'a Headroom> {
    budgets
        .iter()
        .filter(|h| !h.rolling && h.period == period)
        .max_by_key(|h| (h.scope_key.matches('/').count(), std::cmp::Reverse(h.remaining_usd)))
}

fn budget_json(h: &Headroom) -> Value {
    json!({
        "id": h.budget_id,
        "name": h.budget_name,
        "scope": h.scope_key,
        "period": h.period,
        "days": h.days,
        "rolling": h.rolling,
        "time_zone": h.time_zone,
        "limit_usd": h.limit_usd.0.normalize().to_string(),
        "spent_usd": h.spent_usd.0.normalize().to_string(),
        "remaining_usd": h.remaining_usd.0.normalize().to_string(),
        "window_start": rfc3339(h.window_start),
        "window_end": rfc3339(h.window_end),
        "resets_at": h.resets_at.map(rfc3339),
        "spend_revision": h.spend_revision,
        "as_of": rfc3339(h.published_at),
    })
}

fn period_spend(h: Option<&Headroom>, what: &str) -> Value {
    match h {
        Some(h) => json!({
            "spent_usd": h.spent_usd.0.normalize().to_string(),
            "limit_usd": h.limit_usd.0.normalize().to_string(),
            "budget_id": h.budget_id,
            "scope": h.scope_key,
        }),
        None => json!({"unknown": format!("no calendar {what} budget covers this key")}),
    }
}

/// The status line: today's budget, else this month's, else the tightest.
pub fn statusline(budgets: &[Headroom]) -> String {
    if let Some(h) = calendar(budgets, "day") {
        return format!("{} of {} today", cents(h.spent_usd), cents(h.limit_usd));
    }
    if let Some(h) = calendar(budgets, "month") {
        return format!("{} of {} this month", cents(h.spent_usd), cents(h.limit_usd));
    }
    match budgets.iter().min_by_key(|h| h.remaining_usd) {
        Some(h) => format!("{} of {} ({})", cents(h.spent_usd), cents(h.limit_usd), h.budget_name),
        None => "no Faregate budget".to_string(),
    }
}

pub async fn me(State(gw): State<Arc<Gateway>>, Query(query): Query<MeQuery>, request: Request) -> Response {
    let headers = request.headers();
    let provider =
        if headers.contains_key("anthropic-version") { Provider::Anthropic } else { Provider::Openai };
    let identity = match crate::proxy::identify(&gw, headers) {
        Ok(identity) => identity,
        Err(error) => return error.into_response(provider),
    };
    let project = crate::attribution::project(headers);
    let who = identity.attribution(project.as_deref(), None, None);
    let budgets = gw.headroom.covering(&who);
    if query.format.as_deref() == Some("statusline") {
        let mut response = statusline(&budgets).into_response();
        response.headers_mut().insert("content-type", HeaderValue::from_static("text/plain; charset=utf-8"));
        return response;
    }
    let tightest = budgets.iter().min_by_key(|h| h.remaining_usd);
    let body = json!({
        "key": {
            "org": identity.org,
            "team": identity.team,
            "user": identity.user,
            "key_id": identity.key_id,
            "project": project,
        },
        "budgets": budgets
            .iter()
            .map(|h| {
                let mut budget = budget_json(h);
                if let Some(reserver) = &gw.reserver
                    && let Some((position, book)) = gw.headroom.book_of(&h.key())
                {
                    let held = book.held(&position, reserver.rules(), chrono::Utc::now().timestamp_micros());
                    budget["reserved_usd"] = json!(held.open.0.normalize().to_string());
                    budget["settled_unreflected_usd"] = json!(held.settled.0.normalize().to_string());
                    budget["share_usd"] = json!(reserver.share(&position).amount.0.normalize().to_string());
                }
                budget
            })
            .collect::<Vec<_>>(),
        "tightest": tightest.map(|h| json!({
            "budget_id": h.budget_id,
            "remaining_usd": dollars(h.remaining_usd),
            "resets_at": h.resets_at.map(rfc3339),
        })),
        "today": period_spend(calendar(&budgets, "day"), "day"),
        "this_month": period_spend(calendar(&budgets, "month"), "month"),
        "enforcement": if gw.enforcement.stale() { "stale" } else { "live" },
    });
    axum::Json(body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(scope: &str, id: &str, period: &str, spent: &str, limit: &str) -> Headroom {
        let t = chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let (spent, limit): (rust_decimal::Decimal, rust_decimal::Decimal) =
            (spent.parse().unwrap(), limit.parse().unwrap());
        Headroom {
            scope_key: scope.into(),
            budget_id: id.into(),
            budget_name: id.into(),
            period: period.into(),
            days: None,
            rolling: false,
            time_zone: "UTC".into(),
            limit_usd: Usd(limit),
            spent_usd: Usd(spent),
            remaining_usd: Usd(limit - spent),
            window_start: t,
            window_end: t,
            resets_at: Some(t),
            spend_revision: 1,
            usage_watermarks: None,
            shares: None,
            published_at: t,
            revision: 1,
        }
    }

    #[test]
    fn the_status_line_prefers_the_most_specific_day_then_the_month() {
        assert_eq!(statusline(&[]), "no Faregate budget");
        let month = h("org=acme", "m", "month", "40.5", "100");
        assert_eq!(statusline(std::slice::from_ref(&month)), "$40.50 of $100.00 this month");
        let team_day = h("org=acme/team=infra", "td", "day", "30", "50");
        let user_day = h("org=acme/team=infra/user=ana", "ud", "day", "3.195", "10");
        assert_eq!(statusline(&[month, team_day, user_day]), "$3.20 of $10.00 today");
        let week = h("org=acme", "w", "week", "12", "10");
        assert_eq!(statusline(&[week]), "$12.00 of $10.00 (w)");
    }
}
