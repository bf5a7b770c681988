-- Rollups per day: sums of the ledger by every attribution dimension, kept by a
-- materialized view. Queries still aggregate (sum ... GROUP BY), because SummingMergeTree folds
-- rows only at merge time. Each ledger row reaches the view once: the processor never writes an
-- event id twice, and `faregate reprice` clears the affected buckets before re-inserting.
CREATE TABLE IF NOT EXISTS ${TABLE:usage_rollup_day} ${ON_CLUSTER}
(
    bucket DateTime('UTC'),
    org LowCardinality(String),
    team LowCardinality(String),
    user String,
    key_id String,
    project LowCardinality(String),
    model LowCardinality(String),
    tool LowCardinality(String),
    provider LowCardinality(String),
    requests UInt64,
    unpriced_requests UInt64,
    input_tokens UInt64,
    output_tokens UInt64,
    cache_read_tokens UInt64,
    cache_write_5m_tokens UInt64,
    cache_write_1h_tokens UInt64,
    reasoning_tokens UInt64,
    cost_input Decimal(38, 18),
    cost_output Decimal(38, 18),
    cost_cache_read Decimal(38, 18),
    cost_cache_write_5m Decimal(38, 18),
    cost_cache_write_1h Decimal(38, 18),
    cost_reasoning Decimal(38, 18),
    cost_total Decimal(38, 18)
)
ENGINE = ${ENGINE:SummingMergeTree}
PARTITION BY toYear(bucket)
ORDER BY (org, bucket, team, user, key_id, project, model, tool, provider);

${DISTRIBUTED:usage_rollup_day:cityHash64(org)};

CREATE MATERIALIZED VIEW IF NOT EXISTS ${TABLE:usage_rollup_day_mv} ${ON_CLUSTER}
TO ${TABLE:usage_rollup_day}
AS SELECT
    toStartOfDay(occurred_at) AS bucket,
    org, team, user, key_id, project, model, tool, provider,
    count() AS requests,
    countIf(pricing_status = 'unpriced') AS unpriced_requests,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    sum(cache_read_tokens) AS cache_read_tokens,
    sum(cache_write_5m_tokens) AS cache_write_5m_tokens,
    sum(cache_write_1h_tokens) AS cache_write_1h_tokens,
    sum(reasoning_tokens) AS reasoning_tokens,
    sum(ifNull(cost_input, toDecimal128(0, 18))) AS cost_input,
    sum(ifNull(cost_output, toDecimal128(0, 18))) AS cost_output,
    sum(ifNull(cost_cache_read, toDecimal128(0, 18))) AS cost_cache_read,
    sum(ifNull(cost_cache_write_5m, toDecimal128(0, 18))) AS cost_cache_write_5m,
    sum(ifNull(cost_cache_write_1h, toDecimal128(0, 18))) AS cost_cache_write_1h,
    sum(ifNull(cost_reasoning, toDecimal128(0, 18))) AS cost_reasoning,
    sum(ifNull(cost_total, toDecimal128(0, 18))) AS cost_total
FROM ${TABLE:usage_ledger}
GROUP BY bucket, org, team, user, key_id, project, model, tool, provider;
