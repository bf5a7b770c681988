//! Judging a status report: every reason the deployment is blind, as a sentence for people and
//! a stable [`Cause`] for scripts. One fault is named once: with no broker answering, the groups
//! and heartbeats (which could not be asked) add nothing; with ClickHouse unreachable, whether
//! metering is stalled is not judged (the ledger's age is unknown).
//!
//! What counts as blind, and why:
//! - no broker answers: usage is not consumed, decisions are not published or read;
//! - a group's topic or offsets cannot be read (the broker answers, but not for this group);
//! - a partition with waiting records that no member owns, as the broker describes the group
//!   (when it cannot describe the group, ownership is unknown, not missing: tansu 0.6 fails to
//!   describe static-membership groups, and under load every partition always has a few
//!   records waiting, so guessing "unowned" would call a healthy deployment blind);
//! - metering stalled: usage waits on the usage topic (processor lag above 0) and the ledger has
//!   not been written for the staleness bound. This holds whether or not the broker still lists
//!   a dead processor as a member (a SIGKILLed static member stays listed until its session
//!   expires, and on tansu until a dynamic member rejoins), so it is the rule that sees a dead or
//!   stuck processor;
//! - enforcement stale: no heartbeat, a spend partition uncovered, or the watermark older than
//!   the bound;
//! - ClickHouse does not answer (refused, failed, or no answer within the probe's timeout);
//! - an `--ingress` is unreachable, its spool is full, it reports enforcement stale, or it
//!   cannot send its demand reports (the budget service then shares it nothing).

use serde::Serialize;

use super::{BrokerStatus, GroupStatus, HeartbeatStatus, IngressStatus, LedgerStatus};

/// Why the deployment is blind: a stable code for scripts (`causes` in the JSON report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// No broker answered a metadata request.
    BrokerUnreachable,
    /// The broker answered, but a group's topic or committed offsets could not be read.
    GroupUnreadable,
    /// A partition with waiting records that no member of its group owns.
    PartitionUnowned,
    /// Usage waits on the usage topic and the ledger has not been written for the bound.
    MeteringStalled,
    /// The heartbeats topic could not be read.
    HeartbeatsUnreadable,
    /// No heartbeat, a spend partition uncovered, or the watermark older than the bound.
    EnforcementStale,
    /// ClickHouse refused, failed, or did not answer in time.
    LedgerUnreachable,
    /// An `--ingress` metrics endpoint did not answer.
    IngressUnreachable,
    /// An ingress's spool is full: it refuses requests.
    SpoolFull,
    /// An ingress reports enforcement stale.
    IngressEnforcementStale,
    /// An ingress cannot send its demand reports: its shares of budgets shared by demand lapse,
    /// and requests under them wait, then are refused.
    IngressDemandUnreported,
}

/// One reason the deployment is blind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub cause: Cause,
    pub message: String,
}

impl Problem {
    fn new(cause: Cause, message: impl Into<String>) -> Problem {
        Problem { cause, message: message.into() }
    }
}

/// What a report holds, for judging.
pub struct Facts<'a> {
    pub broker: &'a BrokerStatus,
    pub groups: &'a [GroupStatus],
    pub heartbeat: &'a HeartbeatStatus,
    pub ledger: &'a LedgerStatus,
    pub ingress: &'a [IngressStatus],
    /// The bound for the heartbeat watermark and for the ledger's last write while usage waits.
    pub stale_after_secs: u64,
}

/// Every reason the deployment is blind, in the order of the pipeline.
pub fn judge(facts: &Facts<'_>) -> Vec<Problem> {
    let mut problems = Vec::new();
    let bound_ms = facts.stale_after_secs as i64 * 1000;
    if let Some(error) = &facts.broker.error {
        problems.push(Problem::new(
            Cause::BrokerUnreachable,
            format!("the Kafka broker ({}) is unreachable: {error}", facts.broker.brokers),
        ));
    } else {
        for g in facts.groups {
            if let Some(error) = &g.error {
                problems.push(Problem::new(
                    Cause::GroupUnreadable,
                    format!("{} group {} on {}: {error}", g.role, g.group, g.topic),
                ));
                continue;
            }
            let described = g.describe_error.is_none();
            for p in g.partitions.iter().filter(|p| described && p.owner.is_none() && p.lag != Some(0)) {
                let waiting = p.lag.map_or("an unknown number of".to_string(), |l| l.to_string());
                problems.push(Problem::new(
                    Cause::PartitionUnowned,
                    format!(
                        "{} partition {} of {} has {waiting} records waiting and no {} owns it",
                        g.role, p.partition, g.topic, g.role
                    ),
                ));
            }
        }
        if let Some(processor) = facts.groups.iter().find(|g| g.role == "processor" && g.error.is_none())
            && let Some(lag) = processor.lag.filter(|lag| *lag > 0)
            && facts.ledger.error.is_none()
            && facts.ledger.age_ms.is_none_or(|age| age > bound_ms)
        {
            let written = match facts.ledger.age_ms {
                Some(age) => format!("was last written {}s ago", age / 1000),
                None => "has never been written".to_string(),
            };
            problems.push(Problem::new(
                Cause::MeteringStalled,
                format!(
                    "metering is stalled: {lag} usage events wait on {} and the ledger {written} (limit {}s)",
                    processor.topic, facts.stale_after_secs
                ),
            ));
        }
        let h = facts.heartbeat;
        if let Some(error) = &h.error {
            problems.push(Problem::new(
                Cause::HeartbeatsUnreadable,
                format!("heartbeats cannot be read: {error}"),
            ));
        } else if !h.live {
            problems.push(Problem::new(
                Cause::EnforcementStale,
                match (h.partition_count, h.age_ms) {
                    (0, _) => "enforcement is stale: no budget service heartbeat on the heartbeats topic"
                        .to_string(),
                    (_, None) => format!(
                        "enforcement is stale: no budget service heart-beats for spend partitions {:?}",
                        h.uncovered_partitions
                    ),
                    (_, Some(age)) => format!(
                        "enforcement is stale: the heartbeat watermark is {}s old (limit {}s)",
                        age / 1000,
                        h.stale_after_secs
                    ),
                },
            ));
        }
    }
    if let Some(error) = &facts.ledger.error {
        problems.push(Problem::new(Cause::LedgerUnreachable, format!("ClickHouse is unreachable: {error}")));
    }
    for i in facts.ingress {
        if let Some(error) = &i.error {
            problems.push(Problem::new(
                Cause::IngressUnreachable,
                format!("ingress {} is unreachable: {error}", i.url),
            ));
            continue;
        }
        let m = &i.metrics;
        if m.spool_full == Some(true) {
            problems.push(Problem::new(
                Cause::SpoolFull,
                format!("ingress {} has a full spool (it refuses requests)", i.url),
            ));
        }
        if m.enforcement_stale == Some(true) {
            problems.push(Problem::new(
                Cause::IngressEnforcementStale,
                format!("ingress {} reports enforcement stale", i.url),
            ));
        }
        if m.demand_failing == Some(true) {
            problems.push(Problem::new(
                Cause::IngressDemandUnreported,
                format!(
                    "ingress {} cannot send its demand reports: requests under budgets shared by demand wait, then are refused",
                    i.url
                ),
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::super::{PartitionStatus, probe::IngressMetrics};
    use super::*;

    fn broker(error: Option<&str>) -> BrokerStatus {
        BrokerStatus { brokers: "b:9092".into(), reachable: error.is_none(), error: error.map(String::from) }
    }

    /// The processor's group with one partition of `lag` owned by `owner`.
    fn processor(lag: i64, owner: Option<&str>, described: bool) -> GroupStatus {
        GroupStatus {
            role: "processor",
            group: "g".into(),
            topic: "usage".into(),
            state: Some("Stable".into()),
            members: Vec::new(),
            partitions: vec![PartitionStatus {
                partition: 0,
                high_watermark: 100,
                position: Some(100 - lag),
                lag: Some(lag),
                owner: owner.map(String::from),
            }],
            lag: Some(lag),
            error: None,
            describe_error: (!described).then(|| "the broker cannot describe the group".into()),
        }
    }

    fn heartbeat(live: bool) -> HeartbeatStatus {
        HeartbeatStatus {
            topic: "heartbeats".into(),
            live,
            watermark: None,
            age_ms: Some(if live { 1_000 } else { 30_000 }),
            stale_after_secs: 10,
            partition_count: 1,
            uncovered_partitions: Vec::new(),
            instances: Vec::new(),
            error: None,
        }
    }

    fn ledger(age_ms: Option<i64>, error: Option<&str>) -> LedgerStatus {
        LedgerStatus { reachable: error.is_none(), last_write: None, age_ms, error: error.map(String::from) }
    }

    fn causes(
        broker: &BrokerStatus,
        group: GroupStatus,
        heartbeat: &HeartbeatStatus,
        ledger: &LedgerStatus,
    ) -> Vec<Cause> {
        let groups = [group];
        let ingress: [IngressStatus; 0] = [];
        judge(&Facts { broker, groups: &groups, heartbeat, ledger, ingress: &ingress, stale_after_secs: 10 })
            .into_iter()
            .map(|p| p.cause)
            .collect()
    }

    #[test]
    fn each_state_names_its_cause_and_only_it() {
        use Cause::*;
        let ok = broker(None);
        let fresh = ledger(Some(500), None);
        let cases: Vec<(&str, Vec<Cause>, Vec<Cause>)> = vec![
            (
                "live under load, undescribed group",
                causes(&ok, processor(25, None, false), &heartbeat(true), &fresh),
                vec![],
            ),
            (
                "live under load, described group",
                causes(&ok, processor(25, Some("p-0"), true), &heartbeat(true), &fresh),
                vec![],
            ),
            (
                "idle, old ledger",
                causes(&ok, processor(0, None, true), &heartbeat(true), &ledger(Some(3_600_000), None)),
                vec![],
            ),
            (
                "described, nobody owns waiting records",
                causes(&ok, processor(25, None, true), &heartbeat(true), &fresh),
                vec![PartitionUnowned],
            ),
            (
                "dead processor still listed",
                causes(
                    &ok,
                    processor(2_000, Some("p-0"), true),
                    &heartbeat(true),
                    &ledger(Some(12_000), None),
                ),
                vec![MeteringStalled],
            ),
            (
                "usage waits, ledger never written",
                causes(&ok, processor(5, None, false), &heartbeat(true), &ledger(None, None)),
                vec![MeteringStalled],
            ),
            (
                "budget service dead",
                causes(&ok, processor(25, None, false), &heartbeat(false), &fresh),
                vec![EnforcementStale],
            ),
            (
                "ClickHouse frozen",
                causes(
                    &ok,
                    processor(2_000, None, false),
                    &heartbeat(true),
                    &ledger(None, Some("no answer within 10s")),
                ),
                vec![LedgerUnreachable],
            ),
            (
                "broker dead: named once",
                causes(
                    &broker(Some("refused")),
                    GroupStatus { error: Some("not asked".into()), ..processor(0, None, true) },
                    &HeartbeatStatus { error: Some("not asked".into()), ..heartbeat(false) },
                    &fresh,
                ),
                vec![BrokerUnreachable],
            ),
        ];
        for (state, got, want) in cases {
            assert_eq!(got, want, "{state}");
        }
    }

    #[test]
    fn an_ingress_is_judged_by_its_metrics() {
        let ingress = |error: Option<&str>, full: bool, stale: bool, demand: bool| IngressStatus {
            url: "http://i".into(),
            reachable: error.is_none(),
            metrics: IngressMetrics {
                spool_pending_bytes: Some(0.0),
                spool_full: Some(full),
                enforcement_stale: Some(stale),
                demand_failing: Some(demand),
            },
            error: error.map(String::from),
        };
        let all = [
            ingress(Some("refused"), true, true, true),
            ingress(None, true, false, false),
            ingress(None, false, true, false),
            ingress(None, false, false, true),
            ingress(None, false, false, false),
            ingress(None, true, true, true),
        ];
        let got: Vec<Cause> = judge(&Facts {
            broker: &broker(None),
            groups: &[],
            heartbeat: &heartbeat(true),
            ledger: &ledger(Some(0), None),
            ingress: &all,
            stale_after_secs: 10,
        })
        .into_iter()
        .map(|p| p.cause)
        .collect();
        use Cause::*;
        let each = [IngressUnreachable, SpoolFull, IngressEnforcementStale, IngressDemandUnreported];
        let all_three = [SpoolFull, IngressEnforcementStale, IngressDemandUnreported];
        assert_eq!(
            got,
            [each.as_slice(), all_three.as_slice()].concat(),
            "every problem of a reachable ingress, none of one that is not"
        );
    }
}
