//! The ends of many partitions in one request: [`ends`] asks the earliest or the latest offset
//! of every partition of a list with one `ListOffsets` request per broker (librdkafka's
//! `offsets_for_times` with the protocol's special timestamps: -1 latest, -2 earliest).
//!
//! Why not `fetch_watermarks`: it sends two `ListOffsets` per partition (the low and the high
//! end); the ownership watchdog asks every partition of its topic every second. Ask through a
//! consumer of its own (the watchdog's probe), not one that fetches: through a paced consumer
//! it sometimes left the resumed consumer without the message (see [`super::idle::backlog`]).
//! Blocking: call it off the async runtime.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

/// Which end of a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The low watermark: the first offset still stored.
    Earliest,
    /// The high watermark: the offset the next record will get.
    Latest,
}

/// The `end` offset of every (topic, partition) in `partitions` (their offsets are ignored).
/// A partition the broker did not answer for is absent, or is an error if the request failed.
pub fn ends<C: Consumer<X>, X: ConsumerContext>(
    consumer: &C,
    partitions: impl IntoIterator<Item = (String, i32)>,
    end: End,
    timeout: Duration,
) -> Result<HashMap<(String, i32), i64>, KafkaError> {
    let mut query = TopicPartitionList::new();
    let at = match end {
        End::Earliest => Offset::Beginning,
        End::Latest => Offset::End,
    };
    for (topic, partition) in partitions {
        query.add_partition_offset(&topic, partition, at)?;
    }
    if query.count() == 0 {
        return Ok(HashMap::new());
    }
    let answer = consumer.offsets_for_times(query, timeout)?;
    let mut found = HashMap::with_capacity(answer.count());
    for element in answer.elements() {
        element.error()?;
        if let Offset::Offset(offset) = element.offset() {
            found.insert((element.topic().to_string(), element.partition()), offset);
        }
    }
    Ok(found)
}
