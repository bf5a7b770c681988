//! Faregate's decisions inside a gateway written in Rust: follow the compacted decisions topic
//! with the project's public API and answer "is this request blocked?" from memory, as the
//! ingress does (docs/integrations.md, "Decisions in a gateway of your own").
//!
//! The pieces a gateway embeds:
//! - [`faregate_ingress::table::follow`] reads `faregate.decisions.v1` from the beginning into a
//!   [`DecisionCache`] (no consumer group, nothing committed) and keeps following it;
//!   [`Freshness`] says when it caught up and when the broker last answered (a gateway that
//!   cannot vouch for its decisions applies its own fail mode);
//! - [`DecisionCache::check`] answers for a request's attribution with the strictest covering
//!   decision (a read lock and a hash lookup per scope shape in use).
//!
//! Run against the local stack (`deploy/local/up`), one request per line on stdin as
//! `dimension=value` pairs (org is required; team, user, key, project, model, tool optional):
//!
//!   FAREGATE__KAFKA__BROKERS=127.0.0.1:9092 cargo run -p faregate-ingress --example is_blocked
//!   org=acme team=infra user=ana model=claude-opus-4-1
//!   -> blocked: "daily limit reached" (org=acme/team=infra)   (the decision's reason and subject)

use std::collections::HashMap;
use std::sync::Arc;

use faregate_core::avro::SchemaFamily;
use faregate_core::event::{Attribution, Decision, DecisionState};
use faregate_core::kafka::KafkaConfig;
use faregate_ingress::decisions::DecisionCache;
use faregate_ingress::table::{self, Freshness, Lane};
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

/// What a gateway answers for one request.
fn answer(cache: &DecisionCache, freshness: &Freshness, line: &str) -> String {
    let pairs: HashMap<&str, &str> =
        line.split_whitespace().filter_map(|pair| pair.split_once('=')).collect();
    let Some(org) = pairs.get("org") else {
        return "error: org=... is required".into();
    };
    let who = Attribution {
        org,
        team: pairs.get("team").copied(),
        user: pairs.get("user").copied(),
        key_id: pairs.get("key").copied(),
        project: pairs.get("project").copied(),
        model: pairs.get("model").copied(),
        tool: pairs.get("tool").copied(),
    };
    if !freshness.caught_up() {
        return "unknown: the decisions topic is not read to its end yet (apply your fail mode)".into();
    }
    match cache.check(&who) {
        Some(Decision { state: DecisionState::Block, reason, subject, .. }) => {
            format!("blocked: {reason:?} ({subject})")
        }
        Some(Decision { state: DecisionState::Downgrade, downgrade_to, subject, .. }) => {
            format!("downgrade to {} ({subject})", downgrade_to.unwrap_or_default())
        }
        Some(Decision { state, subject, .. }) => format!("allowed, {state:?} ({subject})"),
        None => "allowed".into(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The brokers from the variable Faregate's own services read; the topic names and client
    // settings are the defaults (`faregate config show` prints a deployment's).
    let brokers = std::env::var("FAREGATE__KAFKA__BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let kafka = KafkaConfig { brokers, ..KafkaConfig::default() };
    let cache = Arc::new(DecisionCache::default());
    let freshness = Arc::new(Freshness::default());
    let shutdown = CancellationToken::new();
    let follower = {
        let cache = cache.clone();
        tokio::spawn(table::follow::<Decision, _>(
            kafka.clone(),
            Lane::DecisionPath,
            kafka.topics.decisions.clone(),
            SchemaFamily::Decision,
            freshness.clone(),
            move |subject, decision| cache.apply(subject, decision),
            shutdown.clone(),
        ))
    };
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        println!("{}", answer(&cache, &freshness, &line));
    }
    shutdown.cancel();
    follower.await??;
    Ok(())
}
