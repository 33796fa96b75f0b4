-- 02_publication.sql: the publication outbox-relay's slot decodes.
--
-- Run after 01_outbox_table.sql and BEFORE the replication slot is created
-- (before the relay's first start, or before running it with
-- --create-slot=false). Needs ownership of public.outbox (or superuser):
-- see 03_role.sql.
--
-- Why it must exist before the slot: pgoutput looks the publication up in
-- the catalog as of each decoded transaction (the historic snapshot). On
-- PostgreSQL 15 a publication created after the slot's starting point is
-- missing at those older positions, and decoding fails with
-- 'publication "outbox_relay_pub" does not exist' until the slot is
-- recreated, which loses or replays events.
--
-- Why insert only: an outbox is append-only from the relay's point of view.
-- Publishing only inserts means the cleanup DELETEs (and any UPDATE or
-- TRUNCATE) never reach the relay, cost no decoding output, and cannot be
-- mistaken for events. It also lets the table keep its default replica
-- identity: without published updates/deletes, no REPLICA IDENTITY setting
-- is needed.
--
-- Only public.outbox is in the publication, so the walsender drops every
-- other table's changes before they are sent (PostgreSQL 15 also skips the
-- resulting empty transactions entirely).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'outbox_relay_pub') THEN
        CREATE PUBLICATION outbox_relay_pub FOR TABLE public.outbox WITH (publish = 'insert');
    END IF;
END
$$;
