-- Imported usage (faregate import, usage_event.v2): source_kind gains 'import' = 3. Adding a value
-- at the end of an Enum8 is a metadata-only change; existing rows keep their values. The second
-- statement alters the Distributed table of a cluster (on a single node it repeats the first,
-- which is harmless: MODIFY COLUMN to the same type is a no-op).
ALTER TABLE ${TABLE:usage_ledger} ${ON_CLUSTER}
    MODIFY COLUMN source_kind Enum8('ingress' = 1, 'collector' = 2, 'import' = 3);

ALTER TABLE usage_ledger ${ON_CLUSTER}
    MODIFY COLUMN source_kind Enum8('ingress' = 1, 'collector' = 2, 'import' = 3);
