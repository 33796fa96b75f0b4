-- 03_role.sql: a least-privilege login role for outbox-relay.
--
-- Run as a superuser (or a role with CREATEROLE, plus the REPLICATION
-- attribute itself on PostgreSQL 15) in the application's database, after
-- 01 and 02. Replace the password placeholder before running, e.g.
--   psql -v relay_password="'...'" -f 03_role.sql
-- or set it afterwards with \password outbox_relay. The relay never logs it.
--
-- What the relay needs, and why:
--   LOGIN          it connects.
--   REPLICATION    to open a replication connection (replication=database)
--                  and to create and read its logical slot. This does not
--                  grant reading any table.
--   CONNECT        on the database (explicit in case PUBLIC's default was
--                  revoked).
--   USAGE on schema public, SELECT on public.outbox
--                  to see and read the outbox: the relay's start-up check
--                  (exit code 12) requires SELECT, and it lets an operator
--                  using this role inspect rows that were not relayed.
--                  Decoding itself does not read the table (pgoutput sends
--                  what is in the WAL; SELECT matters to Postgres only for an
--                  initial table copy, which the relay never does).
-- Nothing else: no INSERT/UPDATE/DELETE, no other table.
--
-- The publication (02) needs ownership of public.outbox to be created. Either
-- a DBA (the table owner) runs 02 once and the relay runs with
-- --create-slot creating only the slot, or this role is made the table's
-- owner (ALTER TABLE public.outbox OWNER TO outbox_relay), which is more
-- privilege than it needs for streaming. Prefer the first.
--
-- pg_hba.conf: a logical replication connection is matched by the database
-- name, not by the "replication" keyword, e.g.
--   host  app  outbox_relay  10.0.0.0/8  scram-sha-256
\if :{?relay_password}
\else
\set relay_password '''change-me'''
\endif

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_relay') THEN
        CREATE ROLE outbox_relay LOGIN REPLICATION;
    END IF;
END
$$;
ALTER ROLE outbox_relay WITH LOGIN REPLICATION PASSWORD :relay_password;

-- A replication slot survives the role; keep that in mind when dropping it:
-- SELECT pg_drop_replication_slot('outbox_relay');
SELECT format('GRANT CONNECT ON DATABASE %I TO outbox_relay', current_database()) \gexec
GRANT USAGE ON SCHEMA public TO outbox_relay;
GRANT SELECT ON public.outbox TO outbox_relay;
