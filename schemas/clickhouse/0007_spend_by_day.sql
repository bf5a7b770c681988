-- spend_by reads the day rollup instead of the hour rollup: its window is whole UTC days, and
-- the day rollup holds several times fewer rows (measured over 10M ledger rows: see
-- docs/benchmarks.md, "Analyst queries"). Same columns, same parameters, same results.
-- Spend in a window, by one dimension: SELECT * FROM spend_by(dimension = 'team', from = '2026-11-01', to = '2026-12-01').
-- dimension is one of org, team, user, key_id, project, model, tool, provider; from is inclusive, to exclusive (days).
CREATE OR REPLACE VIEW spend_by ${ON_CLUSTER} AS
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
FROM usage_rollup_day
WHERE bucket >= toDateTime({from:String}, 'UTC') AND bucket < toDateTime({to:String}, 'UTC')
GROUP BY org, value
ORDER BY cost_usd DESC;
