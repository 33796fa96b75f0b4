-- 03_role.sql: a least-privilege login role for outbox-relay.
--
-- Run as a superuser (or a role with CREATEROLE, plus the REPLICATION
-- attribute itself on PostgreSQL 15) in the application's database, after
-- 01 and 02. This file sets no password and holds none. Either pass one as a
-- psql variable, which psql quotes itself and which never lands in this file
-- or in the server log of the statement text you typed:
--   psql -v relay_password='...' -f 03_role.sql
-- or run it without and set the password afterwards, typed at a prompt (psql
-- sends only its SCRAM hash):
--   \password outbox_relay
-- The relay reads it from --postgres-password-file (or libpq's PGPASSFILE /
-- passfile) and never logs it. `outbox-relay setup` prints the same role and
-- grants for the configured names.
--
-- What the relay needs, and why:
--   LOGIN          it connects.
--   REPLICATION    to open a replication connection (replication=database)
--                  and to create and read its logical slot. This is NOT a
--                  read-only grant: a REPLICATION role can create slots of its
--                  own and, through them, decode every change to every table
--                  of the database (table privileges do not apply to logical
--                  decoding), and it can hold WAL on the server with a slot
--                  nobody reads. Treat its credentials like a superuser's for
--                  reading data.
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

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_relay') THEN
        CREATE ROLE outbox_relay LOGIN REPLICATION;
    END IF;
END
$$;
ALTER ROLE outbox_relay WITH LOGIN REPLICATION;
-- Only when a password was given on the command line (-v relay_password=...);
-- :'relay_password' is quoted by psql.
\if :{?relay_password}
ALTER ROLE outbox_relay WITH PASSWORD :'relay_password';
\else
\echo 'no relay_password given: set one with \\password outbox_relay'
\endif

-- A replication slot survives the role; keep that in mind when dropping it:
-- SELECT pg_drop_replication_slot('outbox_relay');
SELECT format('GRANT CONNECT ON DATABASE %I TO outbox_relay', current_database()) \gexec
GRANT USAGE ON SCHEMA public TO outbox_relay;
GRANT SELECT ON public.outbox TO outbox_relay;
