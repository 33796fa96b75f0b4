-- 05_emit_event.sql: the table-less outbox. outbox.emit_event() writes one
-- event straight into the WAL with pg_logical_emit_message; the relay reads
-- messages whose prefix is --message-prefix (default 'outbox') and routes
-- them like outbox rows. No table, nothing to clean up, no row locks.
--
-- transactional = true (the default): the event commits or rolls back with
-- the caller's transaction, in order with the rows it writes. false: the
-- event is in the WAL at once, even if the transaction rolls back (for
-- audit-style events).
--
-- The JSON fields are the outbox row's columns: id, aggregatetype,
-- aggregateid, type, payload, and "headers" (an object of strings) for extra
-- Kafka headers. The relay's route options name them as columns.
CREATE SCHEMA IF NOT EXISTS outbox;

CREATE OR REPLACE FUNCTION outbox.emit_event(
    aggregatetype text,
    aggregateid   text,
    type          text,
    payload       jsonb,
    headers       jsonb   DEFAULT NULL,
    transactional boolean DEFAULT true,
    prefix        text    DEFAULT 'outbox'
) RETURNS uuid
LANGUAGE plpgsql AS $$
DECLARE
    event_id uuid := gen_random_uuid();
    doc jsonb := jsonb_build_object('id', event_id, 'aggregatetype', aggregatetype,
                                    'aggregateid', aggregateid, 'type', type, 'payload', payload);
BEGIN
    IF headers IS NOT NULL THEN
        doc := doc || jsonb_build_object('headers', headers);
    END IF;
    PERFORM pg_logical_emit_message(transactional, prefix, doc::text);
    RETURN event_id;
END $$;

-- Example:
--   BEGIN;
--   UPDATE orders SET status = 'placed' WHERE id = 42;
--   SELECT outbox.emit_event('order', '42', 'OrderPlaced', '{"total": 12.5}', '{"tenant": "acme"}');
--   COMMIT;
