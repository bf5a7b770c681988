//! The ingress's background tasks are part of its shutdown tree: a table follower that can
//! never read its topic stops the ingress with the reason (librdkafka's mock cluster).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use faregate_core::kafka::KafkaConfig;
use faregate_ingress::IngressConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::types::RDKafkaRespErr;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_cannot_read_its_topic_stops_the_ingress_with_the_reason() {
    let mock = MockCluster::new(1).unwrap();
    let mut kafka = KafkaConfig { brokers: mock.bootstrap_servers(), ..KafkaConfig::default() };
    let suffix = uuid::Uuid::now_v7().simple().to_string();
    kafka.topics.usage = format!("usage-{suffix}");
    kafka.topics.config = format!("config-{suffix}");
    kafka.topics.decisions = format!("decisions-{suffix}");
    for topic in [&kafka.topics.usage, &kafka.topics.config, &kafka.topics.decisions] {
        mock.create_topic(topic, 1, 1).unwrap();
    }
    mock.topic_error(&kafka.topics.config, RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED)
        .unwrap();

    let spool = tempfile::tempdir().unwrap();
    let config = IngressConfig { spool_dir: spool.path().to_path_buf(), ..IngressConfig::default() };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ready = Arc::new(AtomicBool::new(false));
    let run =
        faregate_ingress::run_on(listener, config, kafka.clone(), ready.clone(), CancellationToken::new());
    let result =
        tokio::time::timeout(Duration::from_secs(60), run).await.expect("the ingress stops by itself");
    let error = result.expect_err("the ingress fails").to_string();
    assert!(error.contains("keys-follower") && error.contains(&kafka.topics.config), "{error}");
    assert!(error.contains("TopicAuthorizationFailed"), "{error}");
    assert!(!ready.load(Ordering::Acquire), "never ready");
}
