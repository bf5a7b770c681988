-- Every decision the budget service published, for history and audits.
CREATE TABLE IF NOT EXISTS ${TABLE:decision_log} ${ON_CLUSTER}
(
    subject String,
    state Enum8('allow' = 1, 'warn' = 2, 'block' = 3, 'downgrade' = 4),
    reason String,
    budget_id String,
    budget_name String,
    spent_usd Decimal(38, 18),
    limit_usd Nullable(Decimal(38, 18)),
    window_start Nullable(DateTime64(6, 'UTC')),
    resets_at Nullable(DateTime64(6, 'UTC')),
    downgrade_to String,
    decided_at DateTime64(6, 'UTC'),
    revision Int64
)
ENGINE = ${ENGINE:ReplacingMergeTree(revision)}
PARTITION BY toYYYYMM(decided_at)
ORDER BY (subject, decided_at, revision);

${DISTRIBUTED:decision_log:cityHash64(subject)};
