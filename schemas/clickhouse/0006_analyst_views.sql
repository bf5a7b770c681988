-- Views that answer the usual questions directly. Money is exact Decimal(38, 18) US dollars;
-- round only for display (e.g. round(cost_usd, 2)). See docs/analysts.md for example queries.

-- Spend per day by every dimension; filter and group it as needed.
CREATE VIEW IF NOT EXISTS spend_daily ${ON_CLUSTER} AS
SELECT
    toDate(bucket) AS day,
    org, team, user, key_id, project, model, tool, provider,
    sum(requests) AS requests,
    sum(unpriced_requests) AS unpriced_requests,
    sum(input_tokens + output_tokens + cache_read_tokens + cache_write_5m_tokens + cache_write_1h_tokens + reasoning_tokens) AS tokens,
    sum(cache_read_tokens) AS cached_tokens,
    sum(cost_total) AS cost_usd
FROM usage_rollup_day
GROUP BY day, org, team, user, key_id, project, model, tool, provider;

-- Spend in a window, by one dimension: SELECT * FROM spend_by(dimension = 'team', from = '2026-11-01', to = '2026-12-01').
-- dimension is one of org, team, user, key_id, project, model, tool, provider; from is inclusive, to exclusive.
CREATE VIEW IF NOT EXISTS spend_by ${ON_CLUSTER} AS
SELECT
    org,
    multiIf(
        {dimension:String} = 'team', team,
        {dimension:String} = 'user', user,
        {dimension:String} = 'key_id', key_id,
        {dimension:String} = 'project', project,
        {dimension:String} = 'model', model,
        {dimension:String} = 'tool', tool,
        {dimension:String} = 'provider', provider,
        org) AS value,
    sum(requests) AS requests,
    sum(unpriced_requests) AS unpriced_requests,
    sum(input_tokens + output_tokens + cache_read_tokens + cache_write_5m_tokens + cache_write_1h_tokens + reasoning_tokens) AS tokens,
    sum(cost_total) AS cost_usd
FROM usage_rollup_hour
WHERE bucket >= toDateTime({from:String}, 'UTC') AND bucket < toDateTime({to:String}, 'UTC')
GROUP BY org, value
ORDER BY cost_usd DESC;

-- Today's (UTC) top spenders.
CREATE VIEW IF NOT EXISTS top_spenders_today ${ON_CLUSTER} AS
SELECT org, team, user, sum(requests) AS requests, sum(cost_total) AS cost_usd
FROM usage_rollup_hour
WHERE bucket >= toStartOfDay(now('UTC'))
GROUP BY org, team, user
ORDER BY cost_usd DESC
LIMIT 100;

-- Cache reads per model and day: tokens served from the prompt cache and what they cost.
-- What they would have cost at the input rate is in docs/analysts.md (needs the catalog).
CREATE VIEW IF NOT EXISTS cache_reads_daily ${ON_CLUSTER} AS
SELECT
    toDate(bucket) AS day, org, model,
    sum(cache_read_tokens) AS cached_tokens,
    sum(input_tokens) AS uncached_tokens,
    sum(cost_cache_read) AS cache_read_cost_usd,
    sum(cost_input) AS input_cost_usd
FROM usage_rollup_day
GROUP BY day, org, model;

-- Events that could not be priced, with the reason, so the catalog can be fixed and
-- `faregate reprice` run over their time range.
CREATE VIEW IF NOT EXISTS unpriced_events ${ON_CLUSTER} AS
SELECT
    toDate(occurred_at) AS day, org, provider, model, unpriced_reason,
    count() AS events,
    min(occurred_at) AS first_seen,
    max(occurred_at) AS last_seen
FROM usage_ledger FINAL
WHERE pricing_status = 'unpriced'
GROUP BY day, org, provider, model, unpriced_reason;
