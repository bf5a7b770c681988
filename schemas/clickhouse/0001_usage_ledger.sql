-- The ledger: one row per metered request, priced. ClickHouse is Faregate's source of truth;
-- spend aggregates, budget windows and decisions can all be rebuilt from this table.
-- Deduplicated by event_id (the sorting key ends with it, and no two events share an id),
-- so a re-inserted event collapses at merge time; writers also skip ids already present.
-- Money is Decimal(38, 18) US dollars, never Float. A NULL cost means "not priced", never $0.
-- Prompts and completions are never stored.
CREATE TABLE IF NOT EXISTS ${TABLE:usage_ledger} ${ON_CLUSTER}
(
    event_id UUID,
    occurred_at DateTime64(6, 'UTC'),
    received_at DateTime64(6, 'UTC'),
    processed_at DateTime64(6, 'UTC'),
    source_kind Enum8('ingress' = 1, 'collector' = 2),
    source_name LowCardinality(String),
    org LowCardinality(String),
    team LowCardinality(String),
    user String,
    key_id String,
    provider LowCardinality(String),
    requested_model LowCardinality(String),
    served_model LowCardinality(String),
    model LowCardinality(String) COMMENT 'the model priced: served if known, else requested',
    endpoint LowCardinality(String),
    tool LowCardinality(String),
    session_id Nullable(String),
    request_id String,
    upstream_request_id Nullable(String),
    project LowCardinality(String),
    tags Map(LowCardinality(String), String),
    input_tokens UInt64 COMMENT 'excludes cache reads and writes',
    output_tokens UInt64 COMMENT 'excludes reasoning',
    cache_read_tokens UInt64,
    cache_write_5m_tokens UInt64,
    cache_write_1h_tokens UInt64,
    reasoning_tokens UInt64,
    usage_source Enum8('reported' = 1, 'estimated' = 2, 'none' = 3),
    service_tier LowCardinality(String),
    inference_region LowCardinality(String),
    streaming Bool,
    outcome Enum8('ok' = 1, 'upstream_error' = 2, 'client_aborted' = 3, 'blocked' = 4),
    http_status UInt16,
    latency_us UInt64,
    ttfb_us Nullable(UInt64),
    pricing_status Enum8('priced' = 1, 'unpriced' = 2),
    unpriced_reason LowCardinality(String),
    price_ref LowCardinality(String) COMMENT 'catalog entry and version used to price',
    cost_input Nullable(Decimal(38, 18)),
    cost_output Nullable(Decimal(38, 18)),
    cost_cache_read Nullable(Decimal(38, 18)),
    cost_cache_write_5m Nullable(Decimal(38, 18)),
    cost_cache_write_1h Nullable(Decimal(38, 18)),
    cost_reasoning Nullable(Decimal(38, 18)),
    cost_total Nullable(Decimal(38, 18)),
    kafka_topic LowCardinality(String),
    kafka_partition Int32,
    kafka_offset Int64
)
ENGINE = ${ENGINE:ReplacingMergeTree(processed_at)}
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (org, toDate(occurred_at), event_id);

${DISTRIBUTED:usage_ledger:cityHash64(event_id)};
