-- 01_outbox_table.sql: the outbox table outbox-relay reads.
--
-- Run order: 01 (this file) -> 02_publication.sql -> 03_role.sql, as the
-- owner of the application schema, in the application's database. Running it
-- again is harmless (IF NOT EXISTS).
--
-- Layout is Debezium's outbox event router layout, so producers written for
-- Debezium work unchanged and the relay's defaults need no column flags:
--   id             unique event id; becomes the Kafka header "id" (consumers
--                  deduplicate on it)
--   aggregatetype  routes the record: topic "outbox.event.<aggregatetype>"
--                  with the default --topic template
--   aggregateid    Kafka key: all events of one aggregate land in one
--                  partition, in commit order
--   type           event type; becomes the Kafka header "type"
--   payload        Kafka value, sent as the text Postgres prints for it
--                  (jsonb is normalised: key order and spacing may change;
--                  use json or text to keep bytes verbatim)
--   created_at     for humans and cleanup jobs; not sent
--
-- The application INSERTs a row in the same transaction as its business
-- change. Nothing needs to stay in the table: the relay reads the WAL, not
-- the table, so rows may be deleted right after commit (the publication does
-- not publish deletes). A periodic
--   DELETE FROM public.outbox WHERE created_at < now() - interval '1 day';
-- keeps it small while leaving rows around for debugging.
CREATE TABLE IF NOT EXISTS public.outbox (
    id            uuid        PRIMARY KEY,
    aggregatetype text        NOT NULL,
    aggregateid   text        NOT NULL,
    type          text        NOT NULL,
    payload       jsonb,
    created_at    timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE public.outbox IS
    'Transactional outbox: rows are streamed to Kafka by outbox-relay through logical replication';
COMMENT ON COLUMN public.outbox.id IS 'Event id, Kafka header "id"';
COMMENT ON COLUMN public.outbox.aggregatetype IS 'Topic routing: outbox.event.<aggregatetype>';
COMMENT ON COLUMN public.outbox.aggregateid IS 'Kafka record key (per-aggregate ordering)';
COMMENT ON COLUMN public.outbox.type IS 'Event type, Kafka header "type"';
COMMENT ON COLUMN public.outbox.payload IS 'Kafka record value';
COMMENT ON COLUMN public.outbox.created_at IS 'Insert time; not sent to Kafka';

-- For the cleanup DELETE above.
CREATE INDEX IF NOT EXISTS outbox_created_at_idx ON public.outbox (created_at);
