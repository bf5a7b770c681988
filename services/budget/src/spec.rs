//! The human-facing budget format (YAML files kept in git, the admin API's JSON, the CLI) and
//! the validation every budget passes before it is written to the config topic. An invalid
//! budget is refused with a message naming the field (`budgets[2].window.time_zone: ...`).
//!
//! Money is never a float: `limit_usd` is a quoted decimal (`"12.50"`) or an integer; an
//! unquoted `12.5` is refused rather than read through a binary float.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use faregate_core::event::{Budget, BudgetAction, BudgetScope, BudgetWindow, WindowPeriod};
use faregate_core::money::Usd;

use crate::window::Window;

/// Thresholds used when a budget names none.
pub const DEFAULT_THRESHOLDS: [i32; 3] = [50, 80, 100];

/// A budget as people write it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    pub id: String,
    /// Defaults to the id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub scope: ScopeSpec,
    pub window: WindowSpec,
    pub limit_usd: Money,
    #[serde(default = "default_action")]
    pub action: ActionSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downgrade_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thresholds_pct: Option<Vec<i32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<String>,
}

fn default_action() -> ActionSpec {
    ActionSpec::Block
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeSpec {
    pub org: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSpec {
    pub period: PeriodSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<i32>,
    #[serde(default)]
    pub rolling: bool,
    #[serde(default = "default_tz")]
    pub time_zone: String,
}

fn default_tz() -> String {
    "UTC".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeriodSpec {
    Hour,
    Day,
    Week,
    Month,
    Quarter,
    Days,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionSpec {
    Block,
    Downgrade,
    AlertOnly,
}

/// An exact amount of dollars read from a string or an integer, never from a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Money(pub Usd);

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.0.normalize().to_string())
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MoneyVisitor;
        impl Visitor<'_> for MoneyVisitor {
            type Value = Money;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an amount of dollars as a quoted decimal (\"12.50\") or an integer")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Money, E> {
                Decimal::from_str_exact(v.trim().trim_start_matches('$'))
                    .map(|d| Money(Usd(d)))
                    .map_err(|e| E::custom(format!("{v:?} is not a decimal amount: {e}")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Money, E> {
                Ok(Money(Usd(Decimal::from(v))))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Money, E> {
                Ok(Money(Usd(Decimal::from(v))))
            }
            #[allow(clippy::float_arithmetic)]
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Money, E> {
                Err(E::custom(format!(
                    "write the amount in quotes (\"{v}\"): money is never read as a float"
                )))
            }
        }
        deserializer.deserialize_any(MoneyVisitor)
    }
}

impl FromStr for Money {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Decimal::from_str_exact(s.trim().trim_start_matches('$'))
            .map(|d| Money(Usd(d)))
            .map_err(|e| format!("{s:?} is not a decimal amount: {e}"))
    }
}

/// A YAML file of budgets: `budgets: [...]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetFile {
    pub budgets: Vec<BudgetSpec>,
}

/// A budget refused, with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

fn err(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError { field: field.into(), message: message.into() }
}

impl BudgetSpec {
    /// The budget record, validated.
    pub fn to_budget(&self) -> Result<Budget, SpecError> {
        let s = &self.scope;
        let budget = Budget {
            id: self.id.clone(),
            name: self.name.clone().unwrap_or_else(|| self.id.clone()),
            scope: BudgetScope {
                org: s.org.clone(),
                team: s.team.clone(),
                user: s.user.clone(),
                key_id: s.key.clone(),
                project: s.project.clone(),
                model: s.model.clone(),
                tool: s.tool.clone(),
            },
            window: BudgetWindow {
                period: match self.window.period {
                    PeriodSpec::Hour => WindowPeriod::Hour,
                    PeriodSpec::Day => WindowPeriod::Day,
                    PeriodSpec::Week => WindowPeriod::Week,
                    PeriodSpec::Month => WindowPeriod::Month,
                    PeriodSpec::Quarter => WindowPeriod::Quarter,
                    PeriodSpec::Days => WindowPeriod::Days,
                },
                days: self.window.days,
                rolling: self.window.rolling,
                time_zone: self.window.time_zone.clone(),
            },
            limit_usd: self.limit_usd.0,
            action: match self.action {
                ActionSpec::Block => BudgetAction::Block,
                ActionSpec::Downgrade => BudgetAction::Downgrade,
                ActionSpec::AlertOnly => BudgetAction::AlertOnly,
            },
            downgrade_to: self.downgrade_to.clone(),
            thresholds_pct: self.thresholds_pct.clone().unwrap_or_else(|| DEFAULT_THRESHOLDS.to_vec()),
            owner: self.owner.clone(),
            notify: self.notify.clone(),
        };
        validate(&budget)?;
        Ok(budget)
    }

    /// The spec of a budget record (for `list` and the admin API).
    pub fn from_budget(b: &Budget) -> BudgetSpec {
        BudgetSpec {
            id: b.id.clone(),
            name: (b.name != b.id).then(|| b.name.clone()),
            scope: ScopeSpec {
                org: b.scope.org.clone(),
                team: b.scope.team.clone(),
                user: b.scope.user.clone(),
                key: b.scope.key_id.clone(),
                project: b.scope.project.clone(),
                model: b.scope.model.clone(),
                tool: b.scope.tool.clone(),
            },
            window: WindowSpec {
                period: match b.window.period {
                    WindowPeriod::Hour => PeriodSpec::Hour,
                    WindowPeriod::Day => PeriodSpec::Day,
                    WindowPeriod::Week => PeriodSpec::Week,
                    WindowPeriod::Month => PeriodSpec::Month,
                    WindowPeriod::Quarter => PeriodSpec::Quarter,
                    WindowPeriod::Days => PeriodSpec::Days,
                },
                days: b.window.days,
                rolling: b.window.rolling,
                time_zone: b.window.time_zone.clone(),
            },
            limit_usd: Money(b.limit_usd),
            action: match b.action {
                BudgetAction::Block => ActionSpec::Block,
                BudgetAction::Downgrade => ActionSpec::Downgrade,
                BudgetAction::AlertOnly => ActionSpec::AlertOnly,
            },
            downgrade_to: b.downgrade_to.clone(),
            thresholds_pct: Some(b.thresholds_pct.clone()),
            owner: b.owner.clone(),
            notify: b.notify.clone(),
        }
    }
}

impl BudgetFile {
    /// The file as YAML (what `faregate budgets list --yaml` prints).
    pub fn to_yaml(&self) -> String {
        serde_norway::to_string(self).unwrap_or_default()
    }

    /// Parse and validate a YAML file of budgets; errors name `budgets[i].field`.
    pub fn parse_yaml(text: &str) -> Result<Vec<Budget>, SpecError> {
        let file: BudgetFile = serde_norway::from_str(text).map_err(|e| err("file", e.to_string()))?;
        let mut seen = std::collections::BTreeSet::new();
        let mut budgets = Vec::with_capacity(file.budgets.len());
        for (i, spec) in file.budgets.iter().enumerate() {
            let budget = spec.to_budget().map_err(|e| err(format!("budgets[{i}].{}", e.field), e.message))?;
            if !seen.insert(budget.id.clone()) {
                return Err(err(format!("budgets[{i}].id"), format!("{:?} appears twice", budget.id)));
            }
            budgets.push(budget);
        }
        Ok(budgets)
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Check a budget record; the error names the field.
pub fn validate(b: &Budget) -> Result<(), SpecError> {
    if !valid_id(&b.id) {
        return Err(err("id", format!("{:?} must be 1-128 letters, digits, '.', '_' or '-'", b.id)));
    }
    if b.name.trim().is_empty() {
        return Err(err("name", "must not be empty"));
    }
    if b.scope.org.trim().is_empty() {
        return Err(err("scope.org", "every budget belongs to an org"));
    }
    for (field, value) in [
        ("scope.team", &b.scope.team),
        ("scope.user", &b.scope.user),
        ("scope.key", &b.scope.key_id),
        ("scope.project", &b.scope.project),
        ("scope.model", &b.scope.model),
        ("scope.tool", &b.scope.tool),
    ] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
            return Err(err(field, "must not be empty when set (leave it out to match anything)"));
        }
    }
    Window::compile(&b.window).map_err(|e| err(format!("window.{}", e.field), e.message))?;
    if b.limit_usd <= Usd::ZERO {
        return Err(err("limit_usd", format!("{} must be more than zero", b.limit_usd)));
    }
    if let Err(e) = b.limit_usd.to_units() {
        return Err(err("limit_usd", e.to_string()));
    }
    match (b.action, b.downgrade_to.as_deref()) {
        (BudgetAction::Downgrade, None) => {
            return Err(err("downgrade_to", "action `downgrade` needs the model to downgrade to"));
        }
        (BudgetAction::Downgrade, Some(m)) if m.trim().is_empty() => {
            return Err(err("downgrade_to", "must name a model"));
        }
        (BudgetAction::Block | BudgetAction::AlertOnly, Some(_)) => {
            return Err(err("downgrade_to", "only action `downgrade` takes a model"));
        }
        _ => {}
    }
    for t in &b.thresholds_pct {
        if !(1..=1000).contains(t) {
            return Err(err("thresholds_pct", format!("{t} is not a percentage within 1..=1000")));
        }
    }
    for (i, target) in b.notify.iter().enumerate() {
        if target.trim().is_empty() {
            return Err(err(format!("notify[{i}]"), "must not be empty"));
        }
        if target.contains("://") && !(target.starts_with("https://") || target.starts_with("http://")) {
            return Err(err(format!("notify[{i}]"), format!("{target:?}: webhooks must be http(s) URLs")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
budgets:
  - id: infra-daily
    name: Infra daily
    scope: { org: acme, team: infra }
    window: { period: day, time_zone: Europe/Berlin }
    limit_usd: "500"
    thresholds_pct: [50, 80, 100]
    owner: ana@acme.example
    notify: ["https://hooks.slack.example/T0/B0/x"]
  - id: opus-monthly
    scope: { org: acme, team: infra, model: claude-opus-4-1 }
    window: { period: month }
    limit_usd: 2000
    action: downgrade
    downgrade_to: claude-sonnet-4-5
"#;

    #[test]
    fn a_yaml_file_reads_into_budgets() {
        let budgets = BudgetFile::parse_yaml(EXAMPLE).unwrap();
        assert_eq!(budgets.len(), 2);
        assert_eq!(budgets[0].limit_usd, Usd(Decimal::from(500)));
        assert_eq!(budgets[0].scope.key(), "org=acme/team=infra");
        assert_eq!(budgets[1].name, "opus-monthly");
        assert_eq!(budgets[1].thresholds_pct, DEFAULT_THRESHOLDS.to_vec());
        assert_eq!(budgets[1].action, BudgetAction::Downgrade);
        // And back.
        assert_eq!(BudgetSpec::from_budget(&budgets[0]).to_budget().unwrap(), budgets[0]);
    }

    #[test]
    fn invalid_budgets_name_the_field() {
        for (edit, field) in [
            (("Europe/Berlin", "Europe/Berln"), "budgets[0].window.time_zone"),
            (("\"500\"", "\"-1\""), "budgets[0].limit_usd"),
            (("\"500\"", "12.5"), "file"),
            (("downgrade_to: claude-sonnet-4-5", "owner: x"), "budgets[1].downgrade_to"),
            (("[50, 80, 100]", "[0]"), "budgets[0].thresholds_pct"),
            (
                (
                    "org: acme, team: infra }\n    window: { period: day",
                    "org: \"\" }\n    window: { period: day",
                ),
                "budgets[0].scope.org",
            ),
            (("id: opus-monthly", "id: infra-daily"), "budgets[1].id"),
            (("id: opus-monthly", "id: \"no spaces\""), "budgets[1].id"),
            (("period: month", "period: days"), "budgets[1].window.days"),
        ] {
            let text = EXAMPLE.replacen(edit.0, edit.1, 1);
            assert_ne!(text, EXAMPLE, "{edit:?} did not apply");
            let error = BudgetFile::parse_yaml(&text).unwrap_err();
            assert_eq!(error.field, field, "{edit:?}: {error}");
        }
    }

    #[test]
    fn floats_are_refused_with_a_hint() {
        let error = BudgetFile::parse_yaml(&EXAMPLE.replacen("\"500\"", "0.1", 1)).unwrap_err();
        assert!(error.message.contains("in quotes"), "{error}");
    }
}
