-- 04_partitioned_outbox.sql: an outbox partitioned by day, the usual way to
-- keep a busy outbox small (drop old partitions instead of DELETE), with the
-- optional trace-context columns the relay passes on as W3C headers.
--
-- Use it instead of 01_outbox_table.sql. The relay handles a partitioned
-- outbox: it creates its publication WITH (publish_via_partition_root =
-- true), so pgoutput names the root table whatever partition a row lands in,
-- and it refuses (exit 15, with the statement to run) an existing
-- publication without it, which would otherwise lose every event silently.
-- --cleanup-after deletes by row and refuses partitioned tables: drop
-- partitions instead, once the relay has confirmed past them (compare
-- pg_replication_slots.confirmed_flush_lsn with pg_current_wal_lsn(), or look
-- at outbox_relay_confirmed_lsn).
CREATE TABLE IF NOT EXISTS public.outbox (
    id            uuid        NOT NULL DEFAULT gen_random_uuid(),
    aggregatetype text        NOT NULL,
    aggregateid   text        NOT NULL,
    type          text        NOT NULL,
    payload       jsonb,
    traceparent   text,       -- W3C traceparent of the request that wrote the event (optional)
    tracestate    text,       -- W3C tracestate (optional)
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, created_at)          -- a partitioned table's keys include the partition key
) PARTITION BY RANGE (created_at);

-- One partition per day; create them ahead (a cron job or pg_partman does
-- this in production). A row with no partition for it fails its INSERT, and
-- with it the application's transaction: nothing is lost, but keep ahead.
CREATE TABLE IF NOT EXISTS public.outbox_default PARTITION OF public.outbox DEFAULT;

-- Example: today's and tomorrow's partitions.
DO $$
DECLARE d date;
BEGIN
  FOR d IN SELECT generate_series(current_date, current_date + 1, interval '1 day')::date LOOP
    EXECUTE format('CREATE TABLE IF NOT EXISTS public.outbox_%s PARTITION OF public.outbox '
                   'FOR VALUES FROM (%L) TO (%L)', to_char(d, 'YYYYMMDD'), d, d + 1);
  END LOOP;
END $$;

-- Dropping a day once it is relayed (the relay only reads the WAL, never
-- the table, so this never loses an event that was committed before it):
--   ALTER TABLE public.outbox DETACH PARTITION public.outbox_20261130;
--   DROP TABLE public.outbox_20261130;
