//! What `faregate status` asks the broker, ClickHouse and the ingresses, one blocking or async
//! probe each. Every probe returns what it found or the error that stopped it; judging is left
//! to the caller.

use std::collections::BTreeMap;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

use faregate_core::avro::{AvroCodec, SchemaFamily};
use faregate_core::clickhouse::ClickHouseConfig;
use faregate_core::event::Heartbeat;
use faregate_core::kafka::KafkaConfig;

const TIMEOUT: Duration = Duration::from_secs(10);
/// How long the first question to the broker may take before it counts as unreachable.
const BROKER_TIMEOUT: Duration = Duration::from_secs(5);

/// A group member as the broker reports it.
#[derive(Debug, Clone, Serialize)]
pub struct Member {
    pub member_id: String,
    pub client_id: String,
    pub host: String,
    /// The partitions of the group's topic assigned to it.
    pub partitions: Vec<i32>,
}

/// A consumer group as the broker reports it, and its topic's partitions.
#[derive(Debug, Clone)]
pub struct GroupProbe {
    pub state: String,
    pub members: Vec<Member>,
    /// Why the broker could not describe the group (tansu 0.6 fails to for some groups); the
    /// offsets are still read.
    pub describe_error: Option<String>,
    /// Partition -> (low, high) watermarks.
    pub watermarks: BTreeMap<i32, (i64, i64)>,
    /// Partition -> committed offset (only where the group committed one).
    pub committed: BTreeMap<i32, i64>,
}

/// Whether a broker answers: one of `kafka.brokers` accepts a TCP connection (a refused one is
/// known at once, where librdkafka would retry until its timeout), then the usage topic's
/// metadata arrives within 5 s.
pub fn broker(kafka: &KafkaConfig) -> anyhow::Result<()> {
    let mut refused = Vec::new();
    let accepted = kafka.brokers.split(',').map(str::trim).filter(|b| !b.is_empty()).any(|broker| {
        let connected = broker.to_socket_addrs().map_err(anyhow::Error::from).and_then(|addrs| {
            let mut last = anyhow::anyhow!("no address");
            for addr in addrs {
                match TcpStream::connect_timeout(&addr, BROKER_TIMEOUT) {
                    Ok(_) => return Ok(()),
                    Err(e) => last = e.into(),
                }
            }
            Err(last)
        });
        if let Err(e) = &connected {
            refused.push(format!("{broker}: {e}"));
        }
        connected.is_ok()
    });
    anyhow::ensure!(accepted, "no broker accepts a connection ({})", refused.join("; "));
    let client: BaseConsumer = kafka.consumer_config("status", "faregate-status").create()?;
    client
        .fetch_metadata(Some(&kafka.topics.usage), BROKER_TIMEOUT)
        .with_context(|| format!("no answer to a metadata request within {}s", BROKER_TIMEOUT.as_secs()))?;
    Ok(())
}

/// The group `group` on `topic`: members, their assignments, watermarks and committed offsets.
pub fn group(kafka: &KafkaConfig, group: &str, topic: &str) -> anyhow::Result<GroupProbe> {
    // A client with the group's id reads its committed offsets; it never joins (no subscribe).
    let client: BaseConsumer = kafka.consumer_config("status", group).create()?;
    let watermarks = watermarks(&client, topic)?;
    let (list, describe_error) = match client.fetch_group_list(Some(group), TIMEOUT) {
        Ok(list) => (Some(list), None),
        Err(e) => (None, Some(format!("the broker cannot describe the group: {e}"))),
    };
    let info = list.as_ref().and_then(|l| l.groups().iter().find(|g| g.name() == group));
    let state = info.map_or_else(|| "unknown".to_string(), |g| g.state().to_string());
    let members = info
        .map(|g| {
            g.members()
                .iter()
                .map(|m| Member {
                    member_id: m.id().to_string(),
                    client_id: m.client_id().to_string(),
                    host: m.client_host().to_string(),
                    partitions: m.assignment().map(|a| assigned_partitions(a, topic)).unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    let mut request = TopicPartitionList::new();
    for p in watermarks.keys() {
        request.add_partition(topic, *p);
    }
    let committed = client
        .committed_offsets(request, TIMEOUT)
        .context("reading committed offsets")?
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect();
    Ok(GroupProbe { state, members, describe_error, watermarks, committed })
}

/// Partition -> (low, high) of every partition of `topic`.
pub fn watermarks(client: &BaseConsumer, topic: &str) -> anyhow::Result<BTreeMap<i32, (i64, i64)>> {
    let metadata =
        client.fetch_metadata(Some(topic), TIMEOUT).with_context(|| format!("metadata of {topic}"))?;
    let mut out = BTreeMap::new();
    for t in metadata.topics() {
        if let Some(error) = t.error() {
            anyhow::bail!("topic {topic}: {}", rdkafka::types::RDKafkaErrorCode::from(error));
        }
        for p in t.partitions() {
            let marks = client
                .fetch_watermarks(topic, p.id(), TIMEOUT)
                .with_context(|| format!("watermarks of {topic}"))?;
            out.insert(p.id(), marks);
        }
    }
    anyhow::ensure!(!out.is_empty(), "topic {topic} has no partitions (does it exist?)");
    Ok(out)
}

/// The partitions of `topic` in a consumer-protocol assignment (version i16, then an array of
/// (topic string, array of i32 partitions), then user data); empty if it cannot be read.
pub fn assigned_partitions(assignment: &[u8], topic: &str) -> Vec<i32> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (bytes.get(..n)?, bytes.get(n..)?);
        *bytes = tail;
        Some(head)
    }
    fn i16_(bytes: &mut &[u8]) -> Option<i16> {
        Some(i16::from_be_bytes(take(bytes, 2)?.try_into().ok()?))
    }
    fn i32_(bytes: &mut &[u8]) -> Option<i32> {
        Some(i32::from_be_bytes(take(bytes, 4)?.try_into().ok()?))
    }
    let parse = |mut bytes: &[u8]| -> Option<Vec<i32>> {
        let mut out = Vec::new();
        i16_(&mut bytes)?;
        for _ in 0..i32_(&mut bytes)?.max(0) {
            let len = i16_(&mut bytes)?.max(0) as usize;
            let name = take(&mut bytes, len)?;
            for _ in 0..i32_(&mut bytes)?.max(0) {
                let partition = i32_(&mut bytes)?;
                if name == topic.as_bytes() {
                    out.push(partition);
                }
            }
        }
        Some(out)
    };
    let mut partitions = parse(assignment).unwrap_or_default();
    partitions.sort_unstable();
    partitions
}

/// Records on the dead-letter topic (sum of high minus low over its partitions).
pub fn dead_letters(kafka: &KafkaConfig) -> anyhow::Result<i64> {
    let client: BaseConsumer = kafka.consumer_config("status", "faregate-status").create()?;
    Ok(watermarks(&client, &kafka.topics.dlq)?.values().map(|(low, high)| high - low).sum())
}

/// The latest heartbeat of every budget instance on the heartbeats topic.
pub async fn heartbeats(kafka: &KafkaConfig) -> anyhow::Result<Vec<Heartbeat>> {
    let topic = &kafka.topics.heartbeats;
    let codec =
        AvroCodec::<Heartbeat>::new(SchemaFamily::Heartbeat, topic, kafka.schema_registry.registry()).await?;
    let mut reader = faregate_budget::topic::TopicReader::open(kafka, topic, "faregate-status", false)
        .await
        .with_context(|| format!("opening {topic}"))?;
    let mut latest: BTreeMap<String, Heartbeat> = BTreeMap::new();
    while !reader.caught_up() {
        let message = tokio::time::timeout(TIMEOUT, reader.next())
            .await
            .with_context(|| format!("reading {topic}: no answer within {TIMEOUT:?}"))??;
        let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
        match message.payload() {
            None => {
                latest.remove(&key);
            }
            Some(payload) => {
                if let Ok(heartbeat) = codec.decode(payload).await {
                    latest.insert(key, heartbeat);
                }
            }
        }
    }
    Ok(latest.into_values().collect())
}

/// The newest `processed_at` in the ledger (`None` when it is empty).
pub async fn last_ledger_write(clickhouse: &ClickHouseConfig) -> anyhow::Result<Option<DateTime<Utc>>> {
    let micros: i64 = clickhouse
        .client()
        .query("SELECT toInt64(toUnixTimestamp64Micro(max(processed_at))) FROM usage_ledger")
        .fetch_one()
        .await
        .with_context(|| format!("querying usage_ledger at {}", clickhouse.url))?;
    Ok((micros > 0).then(|| DateTime::from_timestamp_micros(micros)).flatten())
}

/// What an ingress's `/metrics` says.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngressMetrics {
    pub spool_pending_bytes: Option<f64>,
    pub spool_full: Option<bool>,
    pub enforcement_stale: Option<bool>,
    /// Its demand reports to the budget service fail (`faregate_ingress_demand_failing`).
    pub demand_failing: Option<bool>,
}

/// Read an ingress's Prometheus metrics from `url` (its metrics address; `/metrics` is added).
pub async fn ingress(url: &str) -> anyhow::Result<IngressMetrics> {
    let url = if url.trim_end_matches('/').ends_with("/metrics") {
        url.to_string()
    } else {
        format!("{}/metrics", url.trim_end_matches('/'))
    };
    let body = reqwest::Client::new()
        .get(&url)
        .timeout(TIMEOUT)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("GET {url}"))?
        .text()
        .await?;
    let value = |name: &str| -> Option<f64> {
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once(' '))
            .find(|(metric, _)| *metric == name || metric.starts_with(&format!("{name}{{")))
            .and_then(|(_, v)| v.trim().parse().ok())
    };
    Ok(IngressMetrics {
        spool_pending_bytes: value("faregate_ingress_spool_pending_bytes"),
        spool_full: value("faregate_ingress_spool_full").map(|v| v >= 1.0),
        enforcement_stale: value("faregate_ingress_enforcement_stale").map(|v| v >= 1.0),
        demand_failing: value("faregate_ingress_demand_failing").map(|v| v >= 1.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumer_protocol_assignment_is_read() {
        let mut bytes = vec![0, 0, 0, 0, 0, 2];
        for (topic, partitions) in [("other", vec![9i32]), ("usage", vec![2, 0])] {
            bytes.extend((topic.len() as i16).to_be_bytes());
            bytes.extend(topic.as_bytes());
            bytes.extend((partitions.len() as i32).to_be_bytes());
            for p in partitions {
                bytes.extend(p.to_be_bytes());
            }
        }
        bytes.extend(0i32.to_be_bytes());
        assert_eq!(assigned_partitions(&bytes, "usage"), vec![0, 2]);
        assert_eq!(assigned_partitions(&bytes[..9], "usage"), Vec::<i32>::new());
    }
}
