#!/usr/bin/env python3
"""bench/bench.py — the orchestration behind bench/run.sh (issue 12).

Runs every figure side by side on one Postgres and one Kafka, in one
invocation, and writes bench.json, bench.md and bench.png into --out:

  1. ceilings   pg_recvlogical (pgoutput, proto 1, same publication, a slot
                copied from the same template as the relay's, i.e. the same
                WAL position) streaming the backlog to /dev/null; and the
                broker's own ingest rate for the same rows (bench_tool ingest:
                the relay's producer settings, same key/value/headers).
  2. catch-up   the relay delivering the same backlog: (a) 1,000-row
                transactions, (b) single-row transactions, measured from
                outside (spawn -> the topic's high watermarks reach N), in
                alternating rounds relay, pg_recvlogical, kafka ingest.
  3. latency    commit -> broker append (LogAppendTime topics) and -> a
                read_committed assign() consumer, at steady rates, plus the
                first record to never-written topics (bench_tool latency).
  4. cost       relay RSS (VmRSS max / VmHWM), CPU s per event (utime+stime),
                instructions per event (callgrind, marginal between two
                backlog sizes), and in full runs a perf + heaptrack profile.
  5. Debezium   PostgreSQL connector + Outbox EventRouter on Connect
                standalone, at its defaults and tuned, on the same backlog
                (catch-up) and at 1,000 ev/s (latency).

Only stdlib. Every wait has a deadline. Everything it creates (slots,
publications, tables, topics, processes) carries the run id and is removed
on exit, also after a failure or a signal. It prints figures and never judges
a timing; it fails (exit 1) when something is broken: a process under test
died, a record is missing or doubled, an output file was not written.
"""
import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PGBIN = "/usr/lib/postgresql/15/bin"

# ---------------------------------------------------------------- sizes

# 10,000 single-row commits/s need ~32 concurrent writers on this 2-core box
# (each client waits for its own commit); the achieved rate is reported.
FULL = dict(
    rows_a=200_000, txn_a=1000, rows_b=100_000, rounds=5,
    latency=[(1000, 4, 60.0), (10000, 32, 60.0)], warmup=5.0, probes=3,
    dbz_configs=["default", "tuned"], dbz_phases=["a", "b"], dbz_latency=(1000, 4, 60.0),
    callgrind=(5000, 25000), profile=True,
)
SMOKE = dict(
    rows_a=5_000, txn_a=1000, rows_b=2_000, rounds=1,
    latency=[(1000, 4, 3.0), (10000, 16, 2.0)], warmup=1.0, probes=1,
    dbz_configs=["default"], dbz_phases=["a"], dbz_latency=(1000, 4, 3.0),
    callgrind=None, profile=False,
)

# Debezium settings, listed in the report. Worker first, then connector.
DBZ_COMMON_WORKER = {
    "key.converter": "org.apache.kafka.connect.storage.StringConverter",
    "value.converter": "org.apache.kafka.connect.storage.StringConverter",
    "plugin.discovery": "service_load",
    "offset.flush.interval.ms": "10000",
}
DBZ_COMMON_CONNECTOR = {
    "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
    "tasks.max": "1",
    "plugin.name": "pgoutput",
    "snapshot.mode": "no_data",
    "publication.autocreate.mode": "disabled",
    "extended.headers.enabled": "false",
    "transforms": "outbox",
    "transforms.outbox.type": "io.debezium.transforms.outbox.EventRouter",
    "transforms.outbox.table.field.event.id": "id",
    "transforms.outbox.table.field.event.key": "aggregateid",
    "transforms.outbox.table.field.event.payload": "payload",
    "transforms.outbox.route.by.field": "aggregatetype",
    "transforms.outbox.table.fields.additional.placement": "type:header:type",
}
DBZ_TUNED = {
    "worker": {"producer.linger.ms": "0"},
    "connector": {"poll.interval.ms": "10"},
}
DBZ_JVM = ["-Xms256m", "-Xmx2g", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
           "-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent",
           "-Djava.awt.headless=true"]


class BenchError(Exception):
    pass


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes and cleanup

class Cleanup:
    """Cleanup actions run in reverse order on exit, each at most once."""

    def __init__(self):
        self.actions = []
        self.lock = threading.Lock()

    def add(self, name, fn):
        with self.lock:
            self.actions.append((name, fn))

    def run(self):
        with self.lock:
            actions, self.actions = self.actions[::-1], []
        for name, fn in actions:
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - cleanup must go on
                log(f"cleanup {name}: {e}")


CLEANUP = Cleanup()


class Proc:
    """A child process we started; stopped by its own pid only."""

    def __init__(self, name, argv, logpath, env=None, cwd=None):
        self.name = name
        self.logpath = logpath
        self.logf = open(logpath, "ab")
        self.t0 = time.time()
        self.p = subprocess.Popen(argv, stdout=self.logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  env=env, cwd=cwd, start_new_session=True)
        self.pid = self.p.pid
        CLEANUP.add(f"stop {name}", lambda: self.stop(timeout=20))

    def alive(self):
        return self.p.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=60.0):
        """Signal, wait up to `timeout`, then SIGKILL. Returns the exit code."""
        if self.p.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"{self.name} pid={self.pid} still running {timeout:.0f} s after {sig.name}: SIGKILL")
                os.kill(self.pid, signal.SIGKILL)
                self.p.wait(30)
        self.logf.close()
        return self.p.returncode

    def tail(self, n=25):
        try:
            with open(self.logpath, "rb") as f:
                return b"".join(f.readlines()[-n:]).decode(errors="replace")
        except OSError:
            return ""


def run(argv, timeout=600, check=True, input_text=None):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input_text)
    if check and r.returncode != 0:
        raise BenchError(f"{os.path.basename(argv[0])} {' '.join(argv[1:3])}... exited {r.returncode}: "
                         f"{(r.stderr or r.stdout).strip()[-1500:]}")
    return r


def deadline_wait(pred, timeout, what, interval=0.05):
    end = time.time() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.time() > end:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_cpu_s(pid):
    """utime+stime of `pid` in seconds, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError):
        return None


def proc_status_kib(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def machine_busy():
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def pid_listening_on(port):
    """The pid of the process listening on 127.0.0.1:`port`, or None."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(parts[9])
        except OSError:
            continue
    if not inodes:
        return None
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(pid)
        except OSError:
            continue
    return None


def children_of(ppid):
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if int(f.read().rsplit(")", 1)[1].split()[1]) == ppid:
                    out.append(int(pid))
        except (OSError, IndexError, ValueError):
            continue
    return out


class CpuWatch:
    """CPU seconds used by the broker, the walsender(s) and the machine as a
    whole over a window: where the two cores went while something ran."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.stop_ev = threading.Event()
        self.wal = {}  # walsender pid -> last cpu seconds seen
        self.broker0 = proc_cpu_s(ctx.broker_pid) if ctx.broker_pid else None
        self.busy0 = machine_busy()
        self.t0 = time.time()
        self.th = threading.Thread(target=self._loop, daemon=True)
        self.th.start()

    def _loop(self):
        pm = self.ctx.postmaster_pid
        while not self.stop_ev.is_set():
            if pm:
                try:
                    with open(f"/proc/{pm}/task/{pm}/children") as f:
                        kids = [int(x) for x in f.read().split()]
                except OSError:
                    kids = []
                for pid in kids:
                    if pid not in self.wal:
                        # A backend's title says walsender only once it has
                        # authenticated: look again on every turn until then.
                        try:
                            with open(f"/proc/{pid}/cmdline", "rb") as f:
                                if b"walsender" not in f.read():
                                    continue
                        except OSError:
                            continue
                    c = proc_cpu_s(pid)
                    if c is not None:
                        self.wal[pid] = c
            self.stop_ev.wait(0.05)

    def finish(self):
        for pid in list(self.wal):
            c = proc_cpu_s(pid)
            if c is not None:
                self.wal[pid] = c
        self.stop_ev.set()
        self.th.join()
        busy1 = machine_busy()
        wall = time.time() - self.t0
        hz = os.sysconf("SC_CLK_TCK")
        out = {"window_s": round(wall, 3),
               "walsender_cpu_s": round(sum(self.wal.values()), 3),
               "machine_busy_cores": round((busy1[0] - self.busy0[0]) / hz / wall, 2) if wall > 0 else None}
        if self.broker0 is not None:
            b1 = proc_cpu_s(self.ctx.broker_pid)
            if b1 is not None:
                out["broker_cpu_s"] = round(b1 - self.broker0, 3)
        return out


class RssWatch:
    """Max VmRSS of a process, sampled every 100 ms."""

    def __init__(self, pid):
        self.pid = pid
        self.max_kib = 0
        self.stop_ev = threading.Event()
        self.th = threading.Thread(target=self._loop, daemon=True)
        self.th.start()

    def _loop(self):
        while not self.stop_ev.is_set():
            v = proc_status_kib(self.pid, "VmRSS")
            if v:
                self.max_kib = max(self.max_kib, v)
            self.stop_ev.wait(0.1)

    def finish(self):
        self.stop_ev.set()
        self.th.join()
        return self.max_kib


# ---------------------------------------------------------------- the context

class Ctx:
    def __init__(self, args):
        self.args = args
        self.sizes = SMOKE if args.smoke else FULL
        self.pg = args.pg
        self.brokers = args.brokers
        self.relay = os.path.abspath(args.relay_bin)
        self.relay_args = list(args.relay_arg or [])
        self.tool_bin = os.path.abspath(args.tool_bin)
        self.out = os.path.abspath(args.out)
        self.run_id = f"bench{os.getpid() % 100000}_{int(time.time()) % 1000000}"
        self.work = tempfile.mkdtemp(prefix=f"outbox-{self.run_id}-")
        self.keep_work = False
        self.failures = []
        m = re.search(r"port=(\d+)", self.pg)
        self.pg_port = int(m.group(1)) if m else 5432
        self.kafka_port = int(self.brokers.split(",")[0].rsplit(":", 1)[1])
        self.postmaster_pid = pid_listening_on(self.pg_port)
        self.broker_pid = pid_listening_on(self.kafka_port)
        self.dbz_home = args.debezium_home
        self.dbz_skip_reason = args.debezium_skipped

    # -- Postgres
    def sql(self, q, timeout=600):
        r = run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", self.pg, "-c", q], timeout=timeout)
        return r.stdout.strip()

    def sql_script(self, *statements, timeout=600):
        argv = ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", self.pg]
        for s in statements:
            argv += ["-c", s]
        return run(argv, timeout=timeout).stdout.strip()

    # -- bench_tool
    def tool(self, *argv, timeout=900, check=True):
        r = run([self.tool_bin, *map(str, argv)], timeout=timeout, check=False)
        try:
            out = json.loads(r.stdout.strip().splitlines()[-1]) if r.stdout.strip() else {}
        except json.JSONDecodeError:
            out = {}
        if check and r.returncode != 0:
            raise BenchError(f"bench_tool {argv[0]} exited {r.returncode}: {out.get('error') or r.stderr.strip()[-800:]}")
        out["_rc"] = r.returncode
        return out

    def create_topics(self, topics, log_append=False):
        argv = ["create-topics", "--brokers", self.brokers, "--partitions", 3]
        for t in topics:
            argv += ["--topic", t]
        if log_append:
            argv.append("--log-append-time")
        self.tool(*argv)

    def fail(self, what):
        log(f"FAILURE: {what}")
        self.failures.append(what)


# ---------------------------------------------------------------- schema and backlog

def setup_schema(ctx):
    """One outbox table (sql/01_outbox_table.sql, renamed) and its insert-only
    publication (sql/02), both named after the run."""
    ctx.table = f"{ctx.run_id}_outbox"
    ctx.pub = f"{ctx.run_id}_pub"
    with open(os.path.join(ROOT, "sql", "01_outbox_table.sql")) as f:
        ddl = f.read().replace("public.outbox", f"public.{ctx.table}").replace(
            "outbox_created_at_idx", f"{ctx.table}_created_at_idx")
    CLEANUP.add("drop schema", lambda: drop_schema(ctx))
    run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", ctx.pg], input_text=ddl)
    ctx.sql(f"CREATE PUBLICATION {ctx.pub} FOR TABLE public.{ctx.table} WITH (publish = 'insert')")


def drop_schema(ctx):
    drop_all_slots(ctx)
    ctx.sql(f"DROP PUBLICATION IF EXISTS {ctx.pub}")
    ctx.sql(f"DROP TABLE IF EXISTS public.{ctx.table}")


def drop_slot(ctx, slot, timeout=30):
    """Drops `slot` once no walsender holds it (terminating ours if needed)."""
    end = time.time() + timeout
    while True:
        row = ctx.sql(f"SELECT coalesce(active_pid, 0) FROM pg_replication_slots WHERE slot_name = '{slot}'")
        if row == "":
            return
        if row == "0":
            ctx.sql(f"SELECT pg_drop_replication_slot('{slot}')")
            return
        if time.time() > end:
            ctx.sql(f"SELECT pg_terminate_backend({row})")
        time.sleep(0.1)


def drop_all_slots(ctx):
    for slot in ctx.sql(f"SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE '{ctx.run_id}%'").split():
        drop_slot(ctx, slot, timeout=10)


def create_slot(ctx, name):
    ctx.sql(f"SELECT pg_create_logical_replication_slot('{name}', 'pgoutput')")


def copy_slot(ctx, src, dst):
    """A new slot at exactly `src`'s position: every run of a phase reads the same WAL."""
    ctx.sql(f"SELECT pg_copy_logical_replication_slot('{src}', '{dst}')")


def payload_sql(n_expr):
    return (f"jsonb_build_object('n', {n_expr}, 'ts_us', (extract(epoch FROM clock_timestamp()) * 1000000)::bigint, "
            f"'pad', repeat('x', 250))")


def write_backlog(ctx, aggtype, rows, txn):
    """`rows` outbox rows in transactions of `txn` rows (~300-byte jsonb payload,
    the shape the latency writer uses). synchronous_commit=off only makes
    writing faster; the WAL is the same."""
    t0 = time.time()
    batches = -(-rows // txn)
    ctx.sql_script(
        "SET synchronous_commit = off",
        f"""DO $$ BEGIN
              FOR t IN 0..{batches - 1} LOOP
                INSERT INTO public.{ctx.table} (id, aggregatetype, aggregateid, type, payload)
                SELECT gen_random_uuid(), '{aggtype}', 'agg-' || (n % 97), 'BenchEvent', {payload_sql('n')}
                FROM generate_series(t * {txn}, least((t + 1) * {txn}, {rows}) - 1) AS n;
                COMMIT;
              END LOOP;
            END $$""")
    end_lsn = ctx.sql("SELECT pg_current_wal_lsn()")
    rows_file = os.path.join(ctx.work, f"rows_{aggtype}.tsv")
    ctx.sql(f"\\copy (SELECT id, aggregatetype, aggregateid, type, payload FROM public.{ctx.table} "
            f"WHERE aggregatetype = '{aggtype}' ORDER BY (payload->>'n')::bigint) TO '{rows_file}'")
    log(f"backlog {aggtype}: {rows} rows in transactions of {txn}, written in {time.time() - t0:.1f} s, end {end_lsn}")
    return end_lsn, rows_file


# ---------------------------------------------------------------- the systems

def relay_argv(ctx, slot, topic_template, port, create_slot_flag=False):
    return [ctx.relay, "run", "--postgres", ctx.pg, "--brokers", ctx.brokers, "--slot", slot,
            "--publication", ctx.pub, "--table", f"public.{ctx.table}", "--topic", topic_template,
            "--metrics-listen", f"127.0.0.1:{port}", "--create-slot", "true" if create_slot_flag else "false",
            *ctx.relay_args]


def metrics(port):
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.rpartition(" ")
            try:
                out[k] = float(v)
            except ValueError:
                pass
    return out


def stop_relay(ctx, proc, what):
    rc = proc.stop(signal.SIGTERM, timeout=60)
    if rc != 0:
        ctx.fail(f"{what}: relay exited {rc} after SIGTERM (log {proc.logpath}):\n{proc.tail()}")
    return rc


def verify(ctx, topics, expect, what):
    argv = ["verify", "--brokers", ctx.brokers, "--expect", expect, "--timeout-s", 300]
    for t in topics:
        argv += ["--topic", t]
    v = ctx.tool(*argv, check=False)
    if v.get("_rc") != 0:
        ctx.fail(f"{what}: {v.get('records')} records, {v.get('missing')} missing, {v.get('duplicates')} doubled "
                 f"of {expect} ({v.get('error', '')})")
    return {k: v.get(k) for k in ("records", "distinct_ids", "missing", "duplicates", "ok")}


def mib(kib):
    return round(kib / 1024.0, 1) if kib else None


def relay_catchup(ctx, phase, label, rows, template_slot, wrapper=None, verify_records=True):
    """One relay run over the backlog: spawn -> N records appended."""
    slot = f"{ctx.run_id}_{label}"
    copy_slot(ctx, template_slot, slot)
    prefix = f"{ctx.run_id}.{label}."
    topic = prefix + phase["aggtype"]
    ctx.create_topics([topic])
    port = free_port()
    argv = relay_argv(ctx, slot, prefix + "{aggregatetype}", port)
    if wrapper:
        argv = wrapper + argv
    cpu = CpuWatch(ctx)
    proc = Proc(f"relay {label}", argv, os.path.join(ctx.work, f"relay_{label}.log"))
    w = ctx.tool("wait", "--brokers", ctx.brokers, "--topic", topic, "--count", rows, "--pid", proc.pid,
                 "--t0", f"{proc.t0:.6f}", "--timeout-s", 3600 if wrapper else 900, check=False)
    where = cpu.finish()
    m = metrics(port)
    if w.get("_rc") != 0:
        stop_relay(ctx, proc, label)
        drop_slot(ctx, slot)
        raise BenchError(f"relay {label}: {w.get('error')}\n{proc.tail()}")
    stop_relay(ctx, proc, label)
    drop_slot(ctx, slot)
    res = {
        "wall_s": round(w["wall_s"], 3), "stream_s": round(w["stream_s"], 3),
        "rate": round(rows / w["wall_s"]), "stream_rate": round(rows / w["stream_s"]) if w["stream_s"] > 0 else None,
        "rss_max_mib": mib(w.get("rss_max_kib")), "hwm_mib": mib(w.get("hwm_kib")),
        "cpu_s": round(w.get("cpu_s_done", 0), 3),
        "cpu_us_per_event": round(w.get("cpu_s_done", 0) * 1e6 / rows, 2),
        "acked_metric": m.get("outbox_relay_records_acked_total"),
        "transactions_metric": m.get("outbox_relay_transactions_total"),
        "status_updates_metric": m.get("outbox_relay_status_updates_sent_total"),
        "where_cpu": where,
    }
    if verify_records:
        res["verify"] = verify(ctx, [topic], rows, f"relay {label}")
    return res


def pg_recvlogical_run(ctx, label, end_lsn, template_slot):
    slot = f"{ctx.run_id}_{label}"
    copy_slot(ctx, template_slot, slot)
    cpu = CpuWatch(ctx)
    t0 = time.time()
    p = subprocess.run([os.path.join(PGBIN, "pg_recvlogical"), "-d", ctx.pg, "--slot", slot, "--start",
                        "--endpos", end_lsn, "--no-loop", "-o", "proto_version=1", "-o",
                        f"publication_names={ctx.pub}", "-f", "/dev/null"],
                       capture_output=True, text=True, timeout=900)
    t1 = time.time()
    where = cpu.finish()
    drop_slot(ctx, slot)
    if p.returncode != 0:
        raise BenchError(f"pg_recvlogical {label} exited {p.returncode}: {p.stderr.strip()}")
    return {"wall_s": round(t1 - t0, 3), "where_cpu": where}


def kafka_ingest_run(ctx, phase, label, rows_file, txn):
    prefix = f"{ctx.run_id}.{label}."
    ctx.create_topics([prefix + phase["aggtype"]])
    r = ctx.tool("ingest", "--brokers", ctx.brokers, "--rows", rows_file, "--topic-prefix", prefix,
                 "--txn-size", txn)
    return {"seconds": round(r["seconds"], 3), "rate": round(r["rate"]), "bytes": r["bytes"]}


# ---------------------------------------------------------------- Debezium

def dbz_settings(config):
    worker = dict(DBZ_COMMON_WORKER)
    connector = dict(DBZ_COMMON_CONNECTOR)
    if config == "tuned":
        worker.update(DBZ_TUNED["worker"])
        connector.update(DBZ_TUNED["connector"])
    return worker, connector


def dbz_start(ctx, label, config, slot, topic_prefix):
    d = os.path.join(ctx.work, f"dbz_{label}")
    os.makedirs(d, exist_ok=True)
    worker, connector = dbz_settings(config)
    rest = free_port()
    worker = {"bootstrap.servers": ctx.brokers, "offset.storage.file.filename": os.path.join(d, "offsets.dat"),
              "plugin.path": os.path.join(ctx.dbz_home, "plugins"), "listeners": f"http://127.0.0.1:{rest}",
              **worker}
    m = re.search(r"host=(\S+)", ctx.pg)
    connector = {"name": f"{ctx.run_id}_{label}", **connector,
                 "database.hostname": m.group(1) if m else "127.0.0.1", "database.port": str(ctx.pg_port),
                 "database.user": re.search(r"user=(\S+)", ctx.pg).group(1) if "user=" in ctx.pg else "postgres",
                 "database.password": "unused-trust-auth",
                 "database.dbname": re.search(r"dbname=(\S+)", ctx.pg).group(1),
                 "topic.prefix": f"{ctx.run_id}_{label}", "table.include.list": f"public.{ctx.table}",
                 "slot.name": slot, "publication.name": ctx.pub,
                 "transforms.outbox.route.topic.replacement": topic_prefix + "${routedByValue}"}
    for name, props in (("worker.properties", worker), ("connector.properties", connector)):
        with open(os.path.join(d, name), "w") as f:
            f.writelines(f"{k}={v}\n" for k, v in props.items())
    argv = ["java", *DBZ_JVM, f"-Dlog4j2.configurationFile=file:{os.path.join(ROOT, 'bench/debezium/log4j2.properties')}",
            "-cp", os.path.join(ctx.dbz_home, "jars", "*"), "org.apache.kafka.connect.cli.ConnectStandalone",
            os.path.join(d, "worker.properties"), os.path.join(d, "connector.properties")]
    return Proc(f"debezium {label}", argv, os.path.join(d, "connect.log"))


def dbz_stop(ctx, proc, slot, what):
    rc = proc.stop(signal.SIGTERM, timeout=60)
    # Connect exits 143 (128+SIGTERM) or 0 after a clean shutdown.
    if rc not in (0, 143, -15):
        ctx.fail(f"{what}: Connect exited {rc} (log {proc.logpath})")
    drop_slot(ctx, slot)


def dbz_catchup(ctx, phase, config, rows, template_slot):
    label = f"dbz_{config}_{phase['name']}"
    slot = f"{ctx.run_id}_{label}"
    copy_slot(ctx, template_slot, slot)
    prefix = f"{ctx.run_id}.{label}."
    topic = prefix + phase["aggtype"]
    ctx.create_topics([topic])
    cpu = CpuWatch(ctx)
    proc = dbz_start(ctx, label, config, slot, prefix)
    w = ctx.tool("wait", "--brokers", ctx.brokers, "--topic", topic, "--count", rows, "--pid", proc.pid,
                 "--t0", f"{proc.t0:.6f}", "--timeout-s", 1200, check=False)
    where = cpu.finish()
    if w.get("_rc") != 0:
        dbz_stop(ctx, proc, slot, label)
        raise BenchError(f"debezium {label}: {w.get('error')}\n{proc.tail()}")
    dbz_stop(ctx, proc, slot, label)
    return {"wall_s": round(w["wall_s"], 3), "stream_s": round(w["stream_s"], 3),
            "rate": round(rows / w["wall_s"]), "stream_rate": round(rows / w["stream_s"]) if w["stream_s"] > 0 else None,
            "rss_max_mib": mib(w.get("rss_max_kib")), "cpu_s": round(w.get("cpu_s_done", 0), 3),
            "where_cpu": where, "verify": verify(ctx, [topic], rows, f"debezium {label}")}


# ---------------------------------------------------------------- latency

def wait_ready(ctx, prefix, proc, what, timeout=180):
    """Ready = one row committed now has reached the system's topic. Works the
    same for the relay and for Connect, whatever their start-up does."""
    topic = prefix + "ready"
    ctx.create_topics([topic])
    t0 = time.time()
    ctx.sql(f"INSERT INTO public.{ctx.table} (id, aggregatetype, aggregateid, type, payload) "
            f"VALUES (gen_random_uuid(), 'ready', 'ready', 'BenchReady', {payload_sql('-1')})")
    w = ctx.tool("wait", "--brokers", ctx.brokers, "--topic", topic, "--count", 1, "--pid", proc.pid,
                 "--timeout-s", timeout, "--poll-ms", 20, check=False)
    if w.get("_rc") != 0:
        raise BenchError(f"{what}: not ready: {w.get('error')}\n{proc.tail()}")
    return round(time.time() - t0, 3)


def latency_tool(ctx, prefix, rate, clients, seconds, drain, extra=()):
    s = ctx.sizes
    return ctx.tool("latency", *extra, "--pg", ctx.pg, "--table", f"public.{ctx.table}", "--brokers", ctx.brokers,
                    "--topic-prefix", prefix, "--rate", rate, "--clients", clients, "--seconds", seconds,
                    "--warmup", s["warmup"], "--probes", s["probes"], "--drain-timeout-s", drain,
                    timeout=seconds + s["warmup"] + drain + 300, check=False)


def summarize_latency(r):
    keys = ("rate_target", "achieved_rate", "clients", "seconds", "sent", "received", "missing", "duplicates",
            "write_errors", "commit_to_append_ms", "commit_to_receive_ms", "insert_to_commit_ack_ms",
            "writer_lag_ms", "probes", "steady_within_1s_after_probe_append_ms", "steady_other_append_ms",
            "cdf_append_ms", "error", "first_write_error", "consumer_error")
    return {k: r[k] for k in keys if k in r}


def pct(sorted_vals, p):
    """Nearest-rank percentile, as bench_tool computes it."""
    import math
    k = max(1, min(len(sorted_vals), math.ceil(p / 100.0 * len(sorted_vals))))
    return sorted_vals[k - 1]


def stats_ms_py(us):
    if not us:
        return {"n": 0}
    v = sorted(us)
    r = lambda x: round(x / 1000.0, 2)  # noqa: E731
    return {"n": len(v), "p50": r(pct(v, 50)), "p90": r(pct(v, 90)), "p99": r(pct(v, 99)), "p999": r(pct(v, 99.9)),
            "max": r(v[-1]), "mean": r(sum(v) / len(v))}


def cdf_ms_py(us):
    v = sorted(us)
    if not v:
        return []
    ps = list(range(1, 100)) + [99.5, 99.9, 99.95, 99.99, 100.0]
    return [[round(pct(v, p) / 1000.0, 2), p / 100.0] for p in ps]


def pg_floor_latency(ctx, rate, clients, seconds):
    """What Postgres alone gives, the latency counterpart of the pg_recvlogical
    ceiling: the same writer at the same rate, a fresh slot streamed by
    `bench_tool stream-stamp` (a bare libpq pgoutput client in one process:
    pg_recvlogical piped into a stamper measured slower than the relay itself,
    one hop too many), which finds each row's ts_us in the pgoutput bytes and
    times its arrival. Commit -> walsender -> a client that does nothing else."""
    label = f"floor{rate}"
    slot = f"{ctx.run_id}_{label}"
    create_slot(ctx, slot)
    stamps = os.path.join(ctx.work, f"stamps_{label}.txt")
    p = Proc(f"stream-stamp {label}", [ctx.tool_bin, "stream-stamp", "--pg", ctx.pg, "--slot", slot,
                                       "--publication", ctx.pub, "--out", stamps],
             os.path.join(ctx.work, f"stream_stamp_{label}.log"))

    def lines():
        try:
            with open(stamps) as f:
                return [ln.split() for ln in f if ln.count(" ") == 2 and ln.endswith("\n")]
        except OSError:
            return []
    try:
        t0 = time.time()
        ctx.sql(f"INSERT INTO public.{ctx.table} (id, aggregatetype, aggregateid, type, payload) "
                f"VALUES (gen_random_uuid(), 'ready', 'ready', 'BenchReady', {payload_sql('-1')})")
        deadline_wait(lambda: not p.alive() or any(x[0] == "-1" for x in lines()), 60,
                      "the floor client to stream", interval=0.1)
        if not p.alive():
            raise BenchError(f"stream-stamp {label} exited {p.p.returncode}\n{p.tail()}")
        ready_s = round(time.time() - t0, 3)
        s_ = ctx.sizes
        w = ctx.tool("latency", "--pg", ctx.pg, "--table", f"public.{ctx.table}", "--brokers", ctx.brokers,
                     "--topic-prefix", "unused.", "--rate", rate, "--clients", clients, "--seconds", seconds,
                     "--warmup", s_["warmup"], "--probes", 0, "--no-consume", timeout=seconds + s_["warmup"] + 300)
        got = deadline_wait(lambda: (lambda ls: ls if len(ls) - 1 >= w["sent"] else None)(lines()), 60,
                            f"the floor client to receive {w['sent']} rows", interval=0.2)
    finally:
        p.stop(signal.SIGTERM, timeout=20)
        drop_slot(ctx, slot)
    seen = {}
    for n, ts, recv in got:
        seen.setdefault(int(n), (int(ts), int(recv)))
    lat = [recv - ts for n, (ts, recv) in seen.items() if n >= 0 and w["t_measure_us"] <= ts < w["t_end_us"]]
    return {"rate_target": rate, "clients": clients, "seconds": seconds, "sent": w["sent"],
            "received": len(seen) - 1, "achieved_rate": w["achieved_rate"], "ready_s": ready_s,
            "commit_to_receive_ms": stats_ms_py(lat), "cdf_receive_ms": cdf_ms_py(lat),
            "insert_to_commit_ack_ms": w["insert_to_commit_ack_ms"], "writer_lag_ms": w["writer_lag_ms"]}


def relay_latency(ctx, rate, clients, seconds, extra=(), label=None):
    label = label or f"lat{rate}"
    slot = f"{ctx.run_id}_{label}"
    create_slot(ctx, slot)
    prefix = f"{ctx.run_id}.{label}."
    port = free_port()
    proc = Proc(f"relay {label}", relay_argv(ctx, slot, prefix + "{aggregatetype}", port),
                os.path.join(ctx.work, f"relay_{label}.log"))
    try:
        ready_s = wait_ready(ctx, prefix, proc, f"relay {label}")
        cpu0 = proc_cpu_s(proc.pid)
        rss = RssWatch(proc.pid)
        r = latency_tool(ctx, prefix, rate, clients, seconds, drain=30, extra=extra)
        rss_max = rss.finish()
        cpu1 = proc_cpu_s(proc.pid)
        hwm = proc_status_kib(proc.pid, "VmHWM")
        alive = proc.alive()
    finally:
        stop_relay(ctx, proc, label)
        drop_slot(ctx, slot)
    if not alive:
        raise BenchError(f"relay {label} died during the latency run\n{proc.tail()}")
    out = summarize_latency(r)
    # The relay logs how long the exactly-once tail scan of each new topic
    # took (on its scan pool; only that topic's records wait for it).
    try:
        with open(proc.logpath, errors="replace") as f:
            out["new_topic_scan_ms"] = [int(m.group(1)) for m in
                                        (re.search(r"event=replay_window_scanned topic=\S*newtopic\S* .*took_ms=(\d+)", ln)
                                         for ln in f) if m]
    except OSError:
        pass
    out.update({"ready_s": ready_s, "rss_max_mib": mib(rss_max), "hwm_mib": mib(hwm),
                "cpu_s": round(cpu1 - cpu0, 3),
                "cpu_us_per_event": round((cpu1 - cpu0) * 1e6 / max(1, r.get("sent", 0)), 2)})
    check_latency(ctx, out, r, f"relay latency {rate}/s")
    return out


def check_latency(ctx, out, r, what):
    if r.get("_rc") not in (0,):
        ctx.fail(f"{what}: bench_tool latency exited {r.get('_rc')}: missing={r.get('missing')} "
                 f"duplicates={r.get('duplicates')} write_errors={r.get('write_errors')} "
                 f"{r.get('error', '')} {r.get('first_write_error', '')}")


def dbz_latency(ctx, config, rate, clients, seconds):
    label = f"dbz_{config}_lat{rate}"
    slot = f"{ctx.run_id}_{label}"
    create_slot(ctx, slot)
    prefix = f"{ctx.run_id}.{label}."
    proc = dbz_start(ctx, label, config, slot, prefix)
    try:
        ready_s = wait_ready(ctx, prefix, proc, f"debezium {label}")
        rss = RssWatch(proc.pid)
        r = latency_tool(ctx, prefix, rate, clients, seconds, drain=60)
        rss_max = rss.finish()
        alive = proc.alive()
    finally:
        dbz_stop(ctx, proc, slot, label)
    if not alive:
        raise BenchError(f"debezium {label} died during the latency run\n{proc.tail()}")
    out = summarize_latency(r)
    out.update({"ready_s": ready_s, "rss_max_mib": mib(rss_max)})
    check_latency(ctx, out, r, f"debezium {config} latency {rate}/s")
    return out


# ---------------------------------------------------------------- cost: callgrind, perf, heaptrack

def parse_callgrind(path):
    """Self cost (Ir) per (object, function) from a callgrind out file, and the
    total. Cost lines after `calls=` are inclusive costs of that call and are
    not self cost."""
    names = {"ob": {}, "fn": {}, "cob": {}, "cfn": {}}
    self_cost = {}
    ob = fn = None
    skip_next = False
    total = None

    def resolve(kind, val):
        table = names["ob" if kind in ("ob", "cob") else "fn"]
        m = re.match(r"\((\d+)\)(?:\s+(.*))?", val)
        if not m:
            return val
        if m.group(2) is not None:
            table[m.group(1)] = m.group(2)
        return table.get(m.group(1), val)

    with open(path, errors="replace") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            c = line[0]
            if c.isdigit() or c in "+-*":
                if skip_next:
                    skip_next = False
                    continue
                parts = line.split()
                if len(parts) >= 2 and fn is not None:
                    try:
                        self_cost[(ob, fn)] = self_cost.get((ob, fn), 0) + int(parts[1])
                    except ValueError:
                        pass
                continue
            key, _, val = line.partition("=")
            if key == "ob":
                ob = resolve("ob", val)
            elif key == "fn":
                fn = resolve("fn", val)
            elif key in ("cob", "cfn", "cfi", "cfl"):
                if key in ("cob", "cfn"):
                    resolve(key, val)
            elif key == "calls":
                skip_next = True
            elif line.startswith("totals:") or line.startswith("summary:"):
                total = int(line.split()[1])
            elif key in ("fl", "fi", "fe"):
                pass
    if total is None:
        total = sum(self_cost.values())
    return total, self_cost


def callgrind_cost(ctx, sizes, txn=1000):
    """Instructions per event on the relay's path (decode -> map -> produce ->
    delivery report -> confirm, librdkafka's threads included): the marginal
    cost between two backlog sizes, so start-up and shutdown cancel out.
    `txn` rows per transaction (1000: the per-record cost; 1: plus the
    per-transaction cost)."""
    if not shutil.which("valgrind"):
        return {"skipped": "valgrind not installed"}
    n1, n2 = sizes
    res = {"events": [n1, n2], "txn_rows": txn}
    runs = []
    for n in (n1, n2):
        # A table of its own per size: the relay streams exactly n outbox rows.
        tag = f"cg{txn}x{n}"
        tbl, pub, slot = f"{ctx.run_id}_{tag}", f"{ctx.run_id}_{tag}pub", f"{ctx.run_id}_{tag}"
        with open(os.path.join(ROOT, "sql", "01_outbox_table.sql")) as f:
            ddl = f.read().replace("public.outbox", f"public.{tbl}").replace("outbox_created_at_idx", f"{tbl}_idx")
        CLEANUP.add(f"drop {tbl}", lambda tbl=tbl, pub=pub: ctx.sql(
            f"DROP PUBLICATION IF EXISTS {pub}; DROP TABLE IF EXISTS public.{tbl}"))
        run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", ctx.pg], input_text=ddl)
        ctx.sql(f"CREATE PUBLICATION {pub} FOR TABLE public.{tbl} WITH (publish = 'insert')")
        create_slot(ctx, slot)
        ctx.sql_script("SET synchronous_commit = off", f"""DO $$ BEGIN
            FOR t IN 0..{-(-n // txn) - 1} LOOP
              INSERT INTO public.{tbl} (id, aggregatetype, aggregateid, type, payload)
              SELECT gen_random_uuid(), 'cg', 'agg-' || (n % 97), 'BenchEvent', {payload_sql('n')}
              FROM generate_series(t * {txn}, least((t + 1) * {txn}, {n}) - 1) AS n;
              COMMIT;
            END LOOP; END $$""")
        prefix = f"{ctx.run_id}.{tag}."
        ctx.create_topics([prefix + "cg"])
        out = os.path.join(ctx.work, f"callgrind.{tag}.out")
        port = free_port()
        argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no",
                "--collect-jumps=no", "--trace-children=no"] + [
            ctx.relay, "run", "--postgres", ctx.pg, "--brokers", ctx.brokers, "--slot", slot, "--publication", pub,
            "--table", f"public.{tbl}", "--topic", prefix + "{aggregatetype}", "--metrics-listen",
            f"127.0.0.1:{port}", "--create-slot", "false"]
        proc = Proc(f"callgrind {tag}", argv, os.path.join(ctx.work, f"callgrind_{tag}.log"))
        w = ctx.tool("wait", "--brokers", ctx.brokers, "--topic", prefix + "cg", "--count", n, "--pid", proc.pid,
                     "--timeout-s", 1800, "--poll-ms", 100, check=False)
        if w.get("_rc") != 0:
            proc.stop(signal.SIGKILL, 10)
            drop_slot(ctx, slot)
            raise BenchError(f"callgrind run {n}: {w.get('error')}\n{proc.tail()}")
        rc = proc.stop(signal.SIGTERM, timeout=300)
        drop_slot(ctx, slot)
        if rc != 0 or not os.path.exists(out):
            ctx.fail(f"callgrind run {n}: relay exited {rc} (log {proc.logpath})")
            return res
        runs.append(parse_callgrind(out))
    (t1, c1), (t2, c2) = runs
    dn = n2 - n1
    res["total_ir"] = [t1, t2]
    res["ir_per_event"] = round((t2 - t1) / dn)
    by_obj = {}
    by_fn = {}
    for key in set(c1) | set(c2):
        d = c2.get(key, 0) - c1.get(key, 0)
        obj = os.path.basename(key[0] or "?")
        by_obj[obj] = by_obj.get(obj, 0) + d
        by_fn[key] = d
    res["ir_per_event_by_object"] = {k: round(v / dn) for k, v in sorted(by_obj.items(), key=lambda kv: -kv[1])
                                     if v / dn >= 50}
    top = sorted(by_fn.items(), key=lambda kv: -kv[1])[:25]
    res["top_self_ir_per_event"] = [{"object": os.path.basename(k[0] or "?"), "function": k[1][:120],
                                     "ir": round(v / dn)} for k, v in top]
    return res


def child_running(parent_pid, exe):
    """The pid of `parent_pid`'s child running the binary `exe`, or None."""
    for pid in children_of(parent_pid):
        try:
            if os.path.realpath(os.readlink(f"/proc/{pid}/exe")) == os.path.realpath(exe):
                return pid
        except OSError:
            continue
    return None


def relay_under(ctx, phase, rows, template_slot, label, wrapper):
    """One relay catch-up run as the child of a profiler (`wrapper` argv):
    waits for the N records, SIGTERMs the relay, waits for the profiler."""
    slot = f"{ctx.run_id}_{label}"
    copy_slot(ctx, template_slot, slot)
    prefix = f"{ctx.run_id}.{label}."
    topic = prefix + phase["aggtype"]
    ctx.create_topics([topic])
    argv = wrapper + relay_argv(ctx, slot, prefix + "{aggregatetype}", free_port())
    proc = Proc(f"relay {label}", argv, os.path.join(ctx.work, f"relay_{label}.log"))
    try:
        relay_pid = deadline_wait(lambda: child_running(proc.pid, ctx.relay) or (not proc.alive() and -1), 60,
                                  f"the relay under {wrapper[0]}", interval=0.005)
        if relay_pid < 0:
            raise BenchError(f"{wrapper[0]} exited before starting the relay\n{proc.tail()}")
        ctx.tool("wait", "--brokers", ctx.brokers, "--topic", topic, "--count", rows, "--pid", relay_pid,
                 "--timeout-s", 1800)
        os.kill(relay_pid, signal.SIGTERM)
        proc.p.wait(600)
    finally:
        proc.stop(signal.SIGTERM, timeout=60)
        drop_slot(ctx, slot)


def profile_catchup(ctx, phase, rows, template_slot):
    """One extra relay catch-up under perf (cpu-clock samples, flat by object
    and symbol) and one under heaptrack (peak heap and who allocated it).
    Not counted in any figure: profilers slow the relay down."""
    out = {}
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    if shutil.which("perf"):
        data = os.path.join(ctx.work, "perf.data")
        relay_under(ctx, phase, rows, template_slot, "prof_perf",
                    ["perf", "record", "-q", "-e", "cpu-clock", "-F", "1999", "-g", "-o", data, "--"])
        rep = run(["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "dso,sym",
                   "--percent-limit", "0.5", "-g", "none"], check=False, timeout=600)
        lines = [ln for ln in rep.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
        txt = os.path.join(ctx.out, "profile_perf_catchup.txt")
        with open(txt, "w") as f:
            f.write(f"# perf record -e cpu-clock -F 1999 -- outbox-relay, catch-up of {rows:,} events "
                    f"({phase['name']}), {stamp}; self time by object and symbol\n")
            f.write("\n".join(lines[:80]) + "\n")
        dso = run(["perf", "report", "-i", data, "--stdio", "--no-children", "--sort", "dso", "-g", "none"],
                  check=False, timeout=600)
        out["perf_by_object_pct"] = {m.group(2): float(m.group(1)) for m in
                                     (re.match(r"\s*([\d.]+)%\s+(\S+)", ln) for ln in dso.stdout.splitlines())
                                     if m}
        out["perf_report"] = os.path.basename(txt)
    if shutil.which("heaptrack"):
        hfile = os.path.join(ctx.work, "heaptrack.relay")
        relay_under(ctx, phase, rows, template_slot, "prof_heap", ["heaptrack", "-o", hfile])
        files = sorted(f for f in os.listdir(ctx.work) if f.startswith("heaptrack.relay"))
        if files:
            rep = run(["heaptrack_print", "-f", os.path.join(ctx.work, files[0]), "-p", "1", "-a", "0", "-T", "0",
                       "-l", "0", "-n", "10", "-s", "2"], check=False, timeout=600)
            txt = os.path.join(ctx.out, "profile_heap_catchup.txt")
            with open(txt, "w") as f:
                f.write(f"# heaptrack -- outbox-relay, catch-up of {rows:,} events ({phase['name']}), {stamp}; "
                        f"top allocation sites by peak consumption\n")
                f.write(rep.stdout[-30000:])
            for key, rx in (("heap_peak", r"peak heap memory consumption:\s*(\S+)"),
                            ("heap_peak_rss", r"peak RSS \(including heaptrack overhead\):\s*(\S+)"),
                            ("allocations", r"calls to allocation functions:\s*(\d+)")):
                m = re.search(rx, rep.stdout)
                out[key] = m.group(1) if m else None
            if out.get("allocations"):
                out["allocations_per_event"] = round(int(out["allocations"]) / rows, 1)
            out["heap_report"] = os.path.basename(txt)
    return out


# ---------------------------------------------------------------- summary

def ratio_text(ours, theirs):
    """ours as a fraction of theirs: "1/26" when smaller, "3.2×" when larger."""
    if ours <= 0 or theirs <= 0:
        return "n/a"
    return f"1/{theirs / ours:.1f}" if ours <= theirs else f"{ours / theirs:.1f}×"


def num(v):
    """A count for a log line; None (e.g. every record in one broker timestamp) prints as n/a."""
    return "n/a" if v is None else f"{v:,}"


def spread(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return {"median": round(statistics.median(vals), 3), "min": round(min(vals), 3), "max": round(max(vals), 3),
            "n": len(vals)}


def summarize_catchup(ph):
    rounds = ph["rounds"]
    s = {
        "relay_rate": spread([r["relay"]["rate"] for r in rounds]),
        "relay_stream_rate": spread([r["relay"]["stream_rate"] for r in rounds]),
        "pg_recvlogical_rate": spread([r["pg_recvlogical"]["rate"] for r in rounds]),
        "kafka_ingest_rate": spread([r["kafka_ingest"]["rate"] for r in rounds]),
        "ratio_to_pg_recvlogical": spread([r["ratio_pg"] for r in rounds]),
        "ratio_to_kafka_ingest": spread([r["ratio_kafka"] for r in rounds]),
        "relay_rss_max_mib": spread([r["relay"]["rss_max_mib"] for r in rounds]),
        "relay_hwm_mib": spread([r["relay"]["hwm_mib"] for r in rounds]),
        "relay_cpu_us_per_event": spread([r["relay"]["cpu_us_per_event"] for r in rounds]),
        "relay_walsender_cpu_us_per_event": spread(
            [r["relay"]["where_cpu"]["walsender_cpu_s"] * 1e6 / ph["rows"] for r in rounds]),
        "pg_recvlogical_walsender_cpu_us_per_event": spread(
            [r["pg_recvlogical"]["where_cpu"]["walsender_cpu_s"] * 1e6 / ph["rows"] for r in rounds]),
        "broker_cpu_us_per_event": spread([r["relay"]["where_cpu"].get("broker_cpu_s", 0) * 1e6 / ph["rows"]
                                           for r in rounds if "broker_cpu_s" in r["relay"]["where_cpu"]]),
        "machine_busy_cores_relay": spread([r["relay"]["where_cpu"]["machine_busy_cores"] for r in rounds]),
    }
    ph["summary"] = s


def target(name, goal, measured, met, note=""):
    return {"target": name, "goal": goal, "measured": measured, "met": met, "note": note}


def evaluate_targets(res):
    t = []
    ca, cb = res["catchup"].get("a"), res["catchup"].get("b")
    for key, ph in (("a", ca), ("b", cb)):
        if ph:
            r = ph["summary"]["ratio_to_pg_recvlogical"]
            t.append(target(f"catch-up ({key}) {ph['title']} vs pg_recvlogical", "≥ 0.95 (median of rounds)",
                            f"{r['median']:.2f} [{r['min']:.2f}–{r['max']:.2f}]", r["median"] >= 0.95))
    lat = res["latency"]
    l1, l10 = lat.get("relay_1000"), lat.get("relay_10000")
    def floor(rate, p):
        f_ = lat.get(f"pg_floor_{rate}")
        return f"; floor {f_['commit_to_receive_ms'][p]:.2f} ms" if f_ and f_["commit_to_receive_ms"].get("n") else ""
    if l1:
        a = l1["commit_to_append_ms"]
        t.append(target("latency p50 at 1,000 ev/s", "≤ 2 ms", f"{a['p50']:.2f} ms{floor(1000, 'p50')}", a["p50"] <= 2))
        t.append(target("latency p99 at 1,000 ev/s", "≤ 5 ms", f"{a['p99']:.2f} ms{floor(1000, 'p99')}", a["p99"] <= 5))
    if l10:
        a = l10["commit_to_append_ms"]
        t.append(target("latency p99 at 10,000 ev/s", "≤ 20 ms",
                        f"{a['p99']:.2f} ms at {l10['achieved_rate']:.0f} ev/s{floor(10000, 'p99')}", a["p99"] <= 20))
    probes = [p for k in ("relay_1000", "relay_10000") if lat.get(k) for p in lat[k]["probes"] if "append_ms" in p]
    if probes:
        worst = max(p["append_ms"] for p in probes)
        t.append(target("first record to a new topic", "≤ 100 ms after commit",
                        f"max {worst:.1f} ms over {len(probes)} topics", worst <= 100))
        for k in ("relay_1000", "relay_10000"):
            v = lat.get(k)
            if not v or not v["steady_within_1s_after_probe_append_ms"].get("n") or \
                    not v["steady_other_append_ms"].get("n"):
                continue
            am, om = v["steady_within_1s_after_probe_append_ms"]["max"], v["steady_other_append_ms"]["max"]
            t.append(target(f"a new topic does not delay other topics ({v['rate_target']:.0f} ev/s)",
                            "max latency of records committed ≤ 1 s after a new-topic record ≤ max of the rest",
                            f"{am:.1f} ms vs {om:.1f} ms", am <= om))
    rss = [ph["summary"]["relay_rss_max_mib"]["max"] for ph in (ca, cb) if ph and ph["summary"]["relay_rss_max_mib"]]
    if rss:
        t.append(target("RSS during catch-up", "≤ 48 MiB", f"max {max(rss):.1f} MiB", max(rss) <= 48))
    if l1 and l1.get("hwm_mib"):
        t.append(target("RSS steady (1,000 ev/s)", "≤ 20 MiB", f"{l1['hwm_mib']:.1f} MiB (VmHWM)",
                        l1["hwm_mib"] <= 20))
    for key, ph in (("a", ca), ("b", cb)):
        if ph:
            c = ph["summary"]["relay_cpu_us_per_event"]
            t.append(target(f"relay CPU per event, catch-up ({key})", "≤ 3 µs",
                            f"{c['median']:.2f} µs [{c['min']:.2f}–{c['max']:.2f}]", c["median"] <= 3))
    dbz = res.get("debezium", {})
    # A smoke run's rates may be unknown (every record in one broker
    # timestamp): no ratio then, rather than a crash.
    ours_rate = (ca or {}).get("summary", {}).get("relay_stream_rate") or {}
    if dbz.get("catchup", {}).get("a") and ours_rate.get("median"):
        best = max((v["stream_rate"] or 0) for v in dbz["catchup"]["a"].values())
        ours = ours_rate["median"]
        if best > 0:
            t.append(target("catch-up vs Debezium (a)", "≥ 6× (streaming rates, Debezium's better config)",
                            f"{ours / best:.1f}× ({ours:.0f} vs {best:.0f} ev/s)", ours / best >= 6))
    dl = dbz.get("latency", {})
    if l1 and dl.get("default"):
        ours, theirs = l1["commit_to_append_ms"]["p99"], dl["default"]["commit_to_append_ms"]["p99"]
        t.append(target("p99 vs Debezium defaults (1,000 ev/s)", "≤ 1/50",
                        f"{ratio_text(ours, theirs)} ({ours:.1f} vs {theirs:.0f} ms)", ours <= theirs / 50))
    if l1 and dl.get("tuned"):
        ours, theirs = l1["commit_to_append_ms"]["p99"], dl["tuned"]["commit_to_append_ms"]["p99"]
        t.append(target("p99 vs Debezium tuned (1,000 ev/s)", "≤ 1/4",
                        f"{ratio_text(ours, theirs)} ({ours:.1f} vs {theirs:.1f} ms)", ours <= theirs / 4))
    return t


# ---------------------------------------------------------------- report: Markdown and chart

def fmt_rate(s):
    if not s:
        return "–"
    return f"{s['median'] / 1000:.1f} k [{s['min'] / 1000:.1f}–{s['max'] / 1000:.1f}]" if s["n"] > 1 \
        else f"{s['median'] / 1000:.1f} k"


def fmt_spread(s, unit="", digits=2):
    if not s:
        return "–"
    if s["n"] > 1:
        return f"{s['median']:.{digits}f}{unit} [{s['min']:.{digits}f}–{s['max']:.{digits}f}]"
    return f"{s['median']:.{digits}f}{unit}"


def write_markdown(res, path):
    m = res["meta"]
    L = []
    L.append(f"# outbox-relay benchmark — {'SMOKE (tiny sizes, figures meaningless)' if m['smoke'] else 'full run'}")
    L.append("")
    L.append(f"- date: {m['date']}; machine: {m['machine']}; load average before / after: "
             f"{m['loadavg_before']} / {m.get('loadavg_after', '?')}; took {res.get('elapsed_s')} s")
    L.append(f"- commit: `{m['commit']}` ({m['branch']}); relay: `{m['relay_bin']}` ({m['relay_version']})"
             + (f", extra relay arguments `{m['relay_args']}`" if m.get("relay_args") else ", relay defaults"))
    L.append(f"- Postgres {m['postgres']}; Kafka broker {m['kafka']}; command: `{m['command']}`")
    L.append(f"- medians over {res['rounds']} alternating rounds, [min–max] in brackets; events/s measured from "
             f"outside (process spawn → the topic's high watermarks reach N)")
    L.append("")
    L.append("## Catch-up (events/s)")
    L.append("")
    L.append("| backlog | pg_recvlogical (ceiling) | Kafka ingest (ceiling) | relay | relay / pg_recvlogical | "
             "relay / Kafka ingest | relay first→last record |")
    L.append("|---|---|---|---|---|---|---|")
    for key, ph in res["catchup"].items():
        s = ph["summary"]
        L.append(f"| ({key}) {ph['title']} | {fmt_rate(s['pg_recvlogical_rate'])} | {fmt_rate(s['kafka_ingest_rate'])}"
                 f" | {fmt_rate(s['relay_rate'])} | {fmt_spread(s['ratio_to_pg_recvlogical'])} | "
                 f"{fmt_spread(s['ratio_to_kafka_ingest'])} | {fmt_rate(s['relay_stream_rate'])} |")
    dbz = res.get("debezium", {})
    if dbz.get("catchup"):
        L.append("")
        L.append("| backlog | Debezium config | events/s spawn→last | events/s first→last record | JVM RSS max |")
        L.append("|---|---|---|---|---|")
        for key, per in dbz["catchup"].items():
            for cfg, v in per.items():
                L.append(f"| ({key}) | {cfg} | {v['rate'] / 1000:.1f} k | {v['stream_rate'] / 1000:.1f} k | "
                         f"{v['rss_max_mib']} MiB |")
    L.append("")
    L.append("## Latency, commit → broker append (LogAppendTime) and → read_committed consumer (ms)")
    L.append("")
    L.append("| system | rate target / achieved (writers) | p50 | p99 | p99.9 | max | consumer p50 / p99 | "
             "Postgres' own commit p50 / p99 | first record, new topic | RSS |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for r, _, _ in res["sizes"]["latency"]:
        v = res["latency"].get(f"pg_floor_{r}")
        if v:
            a, c = v["commit_to_receive_ms"], v["insert_to_commit_ack_ms"]
            L.append(f"| floor: Postgres → bare libpq client | {v['rate_target']:.0f} / {v['achieved_rate']:.0f} "
                     f"({v['clients']}) | {a['p50']:.2f} | {a['p99']:.2f} | {a['p999']:.2f} | {a['max']:.1f} | – | "
                     f"{c['p50']:.2f} / {c['p99']:.2f} | – | – |")
    rows = [(f"relay", res["latency"].get(f"relay_{r}")) for r, _, _ in res["sizes"]["latency"]]
    for cfg, v in dbz.get("latency", {}).items():
        rows.append((f"Debezium {cfg}", v))
    for name, v in rows:
        if not v:
            continue
        a, rcv, c = v["commit_to_append_ms"], v["commit_to_receive_ms"], v["insert_to_commit_ack_ms"]
        probes = ", ".join(f"{p['append_ms']:.0f}" for p in v["probes"] if "append_ms" in p) or "–"
        L.append(f"| {name} | {v['rate_target']:.0f} / {v['achieved_rate']:.0f} ({v['clients']}) | {a['p50']:.2f} | {a['p99']:.2f} | "
                 f"{a['p999']:.2f} | {a['max']:.1f} | {rcv['p50']:.2f} / {rcv['p99']:.2f} | "
                 f"{c['p50']:.2f} / {c['p99']:.2f} | {probes} | {v.get('hwm_mib') or v.get('rss_max_mib')} MiB |")
    L.append("")
    L.append("Commit time = Postgres' `clock_timestamp()` inside the single-row INSERT, right before its COMMIT "
             "(so the figures include the commit's WAL flush, shown as \"Postgres' own commit\": from that "
             "timestamp to the client holding the commit acknowledgement). Append time has millisecond "
             "resolution (+0.5 ms). \"first record, new topic\": one row each to a topic that exists but was "
             "never written, in ms after commit. \"floor\": the same writer with only a bare libpq pgoutput client reading a slot "
             "(commit → the row's bytes arrive at a client): what the relay cannot go below.")
    for name, v in rows:
        if v and v.get("steady_within_1s_after_probe_append_ms", {}).get("n"):
            a, o = v["steady_within_1s_after_probe_append_ms"], v["steady_other_append_ms"]
            scan = (f"; the relay's tail scan of each new topic (on its scan thread) took "
                    f"{', '.join(map(str, v['new_topic_scan_ms']))} ms") if v.get("new_topic_scan_ms") else ""
            L.append(f"- {name} at {v['rate_target']:.0f}/s: records to the steady topic committed within 1 s after "
                     f"a new-topic record: p99 {a['p99']:.1f} ms, max {a['max']:.1f} ms; the others: p99 "
                     f"{o['p99']:.1f} ms, max {o['max']:.1f} ms{scan}")
    L.append("")
    L.append("## Cost")
    L.append("")
    L.append("| what | figure |")
    L.append("|---|---|")
    for key, ph in res["catchup"].items():
        s = ph["summary"]
        L.append(f"| relay RSS max during catch-up ({key}) | {fmt_spread(s['relay_rss_max_mib'], ' MiB', 1)} |")
        L.append(f"| relay CPU per event, catch-up ({key}) | {fmt_spread(s['relay_cpu_us_per_event'], ' µs')} |")
        L.append(f"| walsender CPU per event, relay / pg_recvlogical ({key}) | "
                 f"{fmt_spread(s['relay_walsender_cpu_us_per_event'], ' µs')} / "
                 f"{fmt_spread(s['pg_recvlogical_walsender_cpu_us_per_event'], ' µs')} |")
        if s.get("broker_cpu_us_per_event"):
            L.append(f"| broker CPU per event during relay catch-up ({key}) | "
                     f"{fmt_spread(s['broker_cpu_us_per_event'], ' µs')} |")
        L.append(f"| machine busy during relay catch-up ({key}), of 2 cores | "
                 f"{fmt_spread(s['machine_busy_cores_relay'], ' cores')} |")
    for r, _, _ in res["sizes"]["latency"]:
        v = res["latency"].get(f"relay_{r}")
        if v:
            L.append(f"| relay steady at {r} ev/s: RSS (VmHWM) / CPU per event | {v['hwm_mib']} MiB / "
                     f"{v['cpu_us_per_event']} µs |")
    cg = res["cost"].get("callgrind") or {}
    for c in (cg, res["cost"].get("callgrind_txn1") or {}):
        if c.get("ir_per_event"):
            L.append(f"| instructions per event, {c['txn_rows']}-row transactions (callgrind, marginal "
                     f"{c['events'][0]:,}→{c['events'][1]:,} events) | {c['ir_per_event']:,} |")
            L.append("| … by object | " + ", ".join(f"{k} {v:,}" for k, v in c["ir_per_event_by_object"].items()) + " |")
    if cg.get("skipped"):
        L.append(f"| instructions per event | skipped: {cg['skipped']} |")
    prof = res["cost"].get("profile") or {}
    if prof.get("perf_by_object_pct"):
        L.append("| perf cpu-clock samples by object (catch-up (a)) | " + ", ".join(
            f"{k} {v:.1f}%" for k, v in list(prof["perf_by_object_pct"].items())[:8]) + " |")
    if prof.get("heap_peak"):
        L.append(f"| heaptrack peak heap (catch-up (a)) | {prof['heap_peak']} |")
    if cg.get("top_self_ir_per_event"):
        L.append("")
        L.append("Top functions by self instructions per event (callgrind, 1000-row transactions):")
        L.append("")
        L.append("| object | function | Ir/event |")
        L.append("|---|---|---|")
        for e in cg["top_self_ir_per_event"][:15]:
            L.append(f"| {e['object']} | `{e['function'][:80]}` | {e['ir']:,} |")
    L.append("")
    L.append("## Debezium")
    L.append("")
    if dbz.get("status") != "ran":
        L.append(f"**Not run: {dbz.get('status')}**")
    else:
        L.append(f"Debezium {dbz['version']} PostgreSQL connector + Outbox EventRouter on Kafka Connect "
                 f"{dbz['connect']} standalone, Java {dbz['java']}, JVM `{' '.join(DBZ_JVM)}`.")
        for cfg in dbz["configs"]:
            w, c = dbz_settings(cfg)
            L.append("")
            L.append(f"- **{cfg}** worker: " + ", ".join(f"`{k}={v}`" for k, v in w.items()))
            L.append(f"  connector: " + ", ".join(f"`{k}={v}`" for k, v in c.items()))
        L.append("- per run: `slot.name` (a copy of the relay's template slot for catch-up, a fresh slot for "
                 "latency), `publication.name` (the relay's), `table.include.list`, "
                 "`transforms.outbox.route.topic.replacement=<run prefix>.${routedByValue}`")
    L.append("")
    L.append("## Targets (issue 12)")
    L.append("")
    L.append("| target | goal | measured | |")
    L.append("|---|---|---|---|")
    for t in res["targets"]:
        L.append(f"| {t['target']} | {t['goal']} | {t['measured']} | {'met' if t['met'] else '**missed**'} |")
    if res.get("failures"):
        L.append("")
        L.append("## FAILURES")
        for f_ in res["failures"]:
            L.append(f"- {f_}")
    L.append("")
    L.append("![benchmark chart](bench.png)")
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")


def write_chart(res, out_dir):
    """bench.png: catch-up bars (median, min–max) and latency CDFs."""
    d = os.path.join(res["_work"], "plot")
    os.makedirs(d, exist_ok=True)
    # catch-up bars: one row per backlog, columns = systems
    systems = [("pg_recvlogical", "pg_recvlogical_rate"), ("Kafka ingest", "kafka_ingest_rate"),
               ("relay", "relay_rate")]
    dbz = res.get("debezium", {})
    cfgs = dbz.get("configs", []) if dbz.get("status") == "ran" else []
    with open(os.path.join(d, "catchup.dat"), "w") as f:
        for key, ph in res["catchup"].items():
            s = ph["summary"]
            vals = []
            for _, k in systems:
                v = s[k]
                vals += [v["median"] / 1000, v["min"] / 1000, v["max"] / 1000]
            for cfg in cfgs:
                v = dbz.get("catchup", {}).get(key, {}).get(cfg)
                r = v["stream_rate"] / 1000 if v else 0
                vals += [r, r, r]
            f.write(f"\"({key}) {ph['short']}\" " + " ".join(f"{x:.2f}" for x in vals) + "\n")
    names = [n for n, _ in systems] + [f"Debezium {c} (first→last record)" for c in cfgs]
    ymax = 1.0
    for key, ph in res["catchup"].items():
        ymax = max([ymax] + [ph["summary"][k]["max"] / 1000 for _, k in systems])
    curves = []
    series = []
    for r, _, _ in res["sizes"]["latency"]:
        series.append((f"floor (bare client) {r}/s", res["latency"].get(f"pg_floor_{r}"), "cdf_receive_ms"))
        series.append((f"relay {r}/s", res["latency"].get(f"relay_{r}"), "cdf_append_ms"))
    series += [(f"Debezium {c} {v['rate_target']:.0f}/s", v, "cdf_append_ms") for c, v in dbz.get("latency", {}).items()]
    for name, v, key in series:
        if not v or not v.get(key):
            continue
        fn = os.path.join(d, f"cdf{len(curves)}.dat")
        with open(fn, "w") as f:
            for ms, p in v[key]:
                if p < 1.0:
                    f.write(f"{max(ms, 0.01):.3f} {1.0 / (1.0 - p):.3f}\n")
        curves.append((name, fn))
    n = len(names)
    width = 0.8 / n
    plots = []
    colors = ["#4e79a7", "#59a14f", "#e15759", "#f28e2b", "#b07aa1"]
    for i, name in enumerate(names):
        off = -0.4 + width * (i + 0.5)
        col = 2 + 3 * i
        plots.append(f"'{d}/catchup.dat' using ($0+{off:.3f}):{col}:({width * 0.9:.3f}) with boxes "
                     f"fs solid 0.8 lc rgb '{colors[i % 5]}' title '{name}' noenhanced, "
                     f"'' using ($0+{off:.3f}):{col}:{col + 1}:{col + 2} with yerrorbars lc rgb 'black' pt 0 notitle")
    # A floor and the relay at the same rate share a colour (floor dashed).
    palette = ["#7b3294", "#e66101", "#1b9e77", "#2c7bb6", "#d7191c", "#666666"]
    lat_plots, color_of = [], {}
    for name, fn in curves:
        key = name.split()[-1] if name.startswith(("floor", "relay")) else name
        col = color_of.setdefault(key, palette[len(color_of) % len(palette)])
        floor_ = name.startswith("floor")
        lat_plots.append(f"'{fn}' using 2:1 with linespoints lw {1 if floor_ else 2} dt {2 if floor_ else 1} "
                         f"pt 7 ps 0.3 lc rgb '{col}' title '{name}' noenhanced")
    m = res["meta"]
    script = f"""
set terminal pngcairo size 1400,560 font 'Sans,10'
set output '{os.path.join(out_dir, 'bench.png')}'
set multiplot layout 1,2 title noenhanced "outbox-relay bench {'(SMOKE: tiny sizes) ' if m['smoke'] else ''}— {m['date']} — {m['commit']} — {m['machine_short']}"
set title 'catch-up: events/s (thousands), spawn → last record appended; median, min–max'
set style fill solid 0.8
set boxwidth {width * 0.9:.3f}
set xtics nomirror
set ytics nomirror
set grid ytics
set key top left noenhanced
set yrange [0:{ymax * 1.35:.1f}]
set xrange [-0.6:{len(res['catchup']) - 0.4}]
set xtics ({", ".join(f'"{"(" + k + ") " + ph["short"]}" {i}' for i, (k, ph) in enumerate(res["catchup"].items()))})
plot {", ".join(plots)}
set title 'latency: commit → broker append (floor: commit → bare client), ms, by percentile'
set logscale x
set logscale y
set xrange [1:*]
set yrange [*:*]
set xlabel 'percentile'
set ylabel 'ms'
set xtics ('50' 2, '90' 10, '99' 100, '99.9' 1000, '99.99' 10000)
set key top left
plot {", ".join(lat_plots) if lat_plots else "1/0 notitle"}
unset multiplot
"""
    with open(os.path.join(d, "chart.gp"), "w") as f:
        f.write(script)
    r = run(["gnuplot", os.path.join(d, "chart.gp")], check=False, timeout=120)
    if r.returncode != 0:
        raise BenchError(f"gnuplot failed: {r.stderr.strip()[-800:]}")


# ---------------------------------------------------------------- main

def meta(ctx):
    def sh(*argv):
        r = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
        return r.stdout.strip() if r.returncode == 0 else "?"
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    with open("/proc/meminfo") as f:
        mem_gib = int(f.readline().split()[1]) / 1024 / 1024
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    # Results being rewritten by this very run do not make the tree dirty.
    excludes = [":(exclude)bench/results"]
    if ctx.out.startswith(ROOT + os.sep):
        excludes.append(f":(exclude){os.path.relpath(ctx.out, ROOT)}")
    dirty = sh("git", "status", "--porcelain", "--untracked-files=no", "--", ".", *excludes)
    kafka = "?"
    if ctx.broker_pid:
        try:
            with open(f"/proc/{ctx.broker_pid}/cmdline", "rb") as f:
                mk = re.search(rb"kafka_2\.13-([\d.]+)\.jar", f.read())
                kafka = mk.group(1).decode() if mk else "?"
            if kafka == "?":
                with open(f"/proc/{ctx.broker_pid}/cmdline", "rb") as f:
                    cp = f.read().split(b"\0")
                for c in cp:
                    for d_ in c.decode(errors="replace").split(":"):
                        if d_.endswith("/*") and os.path.isdir(d_[:-2]):
                            for j in os.listdir(d_[:-2]):
                                mk = re.match(r"kafka_2\.13-([\d.]+)\.jar", j)
                                if mk:
                                    kafka = mk.group(1)
        except OSError:
            pass
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} × {cpu}, {mem_gib:.0f} GiB RAM, Linux {platform.release()}",
        "machine_short": f"{os.cpu_count()} cores",
        "loadavg_before": load,
        "commit": sh("git", "rev-parse", "--short", "HEAD") + (" (dirty)" if dirty not in ("", "?") else ""),
        "branch": sh("git", "rev-parse", "--abbrev-ref", "HEAD"),
        "relay_bin": ctx.relay,
        "relay_version": run([ctx.relay, "--version"], check=False).stdout.strip() or "?",
        "relay_args": " ".join(ctx.relay_args),
        "postgres": ctx.sql("SHOW server_version"),
        "kafka": kafka,
        "command": ctx.args.command.strip(),
        "smoke": ctx.args.smoke,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    if len(sys.argv) == 3 and sys.argv[1] == "--render":
        return render_only(sys.argv[2])
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--pg", required=True)
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--relay-bin", required=True)
    ap.add_argument("--tool-bin", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--debezium-home", default="", help="fetch.sh's cache dir (jars/, plugins/); empty = skip")
    ap.add_argument("--debezium-skipped", default="", help="why Debezium is not run (printed, recorded)")
    ap.add_argument("--command", default="bench/run.sh")
    ap.add_argument("--relay-arg", action="append", help="extra argument for every relay run (e.g. -X linger.ms=0)")
    args = ap.parse_args()

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    ctx = Ctx(args)
    os.makedirs(ctx.out, exist_ok=True)
    for stale in ("bench.json", "bench.md", "bench.png"):
        if os.path.exists(os.path.join(ctx.out, stale)):
            os.remove(os.path.join(ctx.out, stale))
    CLEANUP.add("delete topics", lambda: ctx.tool("delete-topics", "--brokers", ctx.brokers, "--prefix",
                                                  ctx.run_id + ".", check=False))
    started = time.time()
    s = ctx.sizes
    res = {"meta": None, "rounds": s["rounds"], "sizes": s, "catchup": {}, "latency": {}, "cost": {},
           "debezium": {}, "_work": ctx.work}
    ok = False
    try:
        for tool in ("psql", "gnuplot", os.path.join(PGBIN, "pg_recvlogical")):
            if not shutil.which(tool):
                raise BenchError(f"{tool} not found (bash integration/install-deps.sh)")
        if not os.access(ctx.relay, os.X_OK):
            raise BenchError(f"relay binary {ctx.relay} is not executable")
        res["meta"] = meta(ctx)
        log(f"run {ctx.run_id}: {'SMOKE' if args.smoke else 'full'}; relay {ctx.relay}; pg {ctx.pg}; "
            f"brokers {ctx.brokers}; work dir {ctx.work}")
        if not ctx.broker_pid or not ctx.postmaster_pid:
            log(f"note: broker pid {ctx.broker_pid}, postmaster pid {ctx.postmaster_pid}: "
                "CPU of the ones not found is not reported")
        dbz_on = bool(ctx.dbz_home)
        if dbz_on:
            res["debezium"] = {"status": "ran", "version": "3.6.1.Final", "connect": "4.3.0",
                               "java": run(["java", "-version"], check=False).stderr.split('"')[1]
                               if '"' in run(["java", "-version"], check=False).stderr else "?",
                               "configs": s["dbz_configs"], "catchup": {}, "latency": {}}
        else:
            res["debezium"] = {"status": f"skipped: {ctx.dbz_skip_reason or 'not requested'}"}
            log("=" * 70)
            log(f"DEBEZIUM SKIPPED: {ctx.dbz_skip_reason or 'not requested'}")
            log("=" * 70)

        setup_schema(ctx)
        phases = [
            {"name": "a", "aggtype": "txn1000", "rows": s["rows_a"], "txn": s["txn_a"],
             "title": f"{s['rows_a']:,} events in {s['txn_a']:,}-row transactions", "short": f"{s['txn_a']}-row txns"},
            {"name": "b", "aggtype": "txn1", "rows": s["rows_b"], "txn": 1,
             "title": f"{s['rows_b']:,} single-row transactions", "short": "1-row txns"},
        ]
        for ph in phases:
            tmpl = f"{ctx.run_id}_tmpl_{ph['name']}"
            create_slot(ctx, tmpl)
            end_lsn, rows_file = write_backlog(ctx, ph["aggtype"], ph["rows"], ph["txn"])
            out = {"rows": ph["rows"], "txn": ph["txn"], "title": ph["title"], "short": ph["short"], "rounds": []}
            for i in range(1, s["rounds"] + 1):
                rl = relay_catchup(ctx, ph, f"{ph['name']}_relay{i}", ph["rows"], tmpl)
                pg = pg_recvlogical_run(ctx, f"{ph['name']}_pg{i}", end_lsn, tmpl)
                pg["rate"] = round(ph["rows"] / pg["wall_s"])
                kf = kafka_ingest_run(ctx, ph, f"{ph['name']}_kafka{i}", rows_file, ph["txn"])
                rnd = {"relay": rl, "pg_recvlogical": pg, "kafka_ingest": kf,
                       "ratio_pg": round(rl["rate"] / pg["rate"], 3), "ratio_kafka": round(rl["rate"] / kf["rate"], 3)}
                out["rounds"].append(rnd)
                log(f"catch-up ({ph['name']}) round {i}: relay {rl['rate']:,}/s (first→last {num(rl['stream_rate'])}/s, "
                    f"RSS {rl['rss_max_mib']} MiB, {rl['cpu_us_per_event']} µs CPU/event), pg_recvlogical "
                    f"{pg['rate']:,}/s, kafka ingest {kf['rate']:,}/s, ratio {rnd['ratio_pg']:.2f} / "
                    f"{rnd['ratio_kafka']:.2f}")
            summarize_catchup(out)
            res["catchup"][ph["name"]] = out
            if s["profile"] and ph["name"] == "a":
                log("profile: perf and heaptrack on one more catch-up (a), not counted")
                res["cost"]["profile"] = profile_catchup(ctx, ph, ph["rows"], tmpl)
            if dbz_on and ph["name"] in s["dbz_phases"]:
                res["debezium"]["catchup"][ph["name"]] = {}
                for cfg in s["dbz_configs"]:
                    v = dbz_catchup(ctx, ph, cfg, ph["rows"], tmpl)
                    res["debezium"]["catchup"][ph["name"]][cfg] = v
                    log(f"catch-up ({ph['name']}) Debezium {cfg}: {v['rate']:,}/s from spawn, "
                        f"{num(v['stream_rate'])}/s first→last record")
            drop_slot(ctx, tmpl)

        for rate, clients, seconds in s["latency"]:
            f_ = pg_floor_latency(ctx, rate, clients, seconds)
            res["latency"][f"pg_floor_{rate}"] = f_
            a = f_["commit_to_receive_ms"]
            log(f"latency floor (bare client) {rate}/s (achieved {f_['achieved_rate']:.0f}): p50 {a['p50']} "
                f"p99 {a['p99']} p99.9 {a['p999']} max {a['max']} ms")
            v = relay_latency(ctx, rate, clients, seconds)
            res["latency"][f"relay_{rate}"] = v
            a = v["commit_to_append_ms"]
            log(f"latency relay {rate}/s (achieved {v['achieved_rate']:.0f}): p50 {a['p50']} p99 {a['p99']} "
                f"p99.9 {a['p999']} max {a['max']} ms; new topic "
                f"{[p.get('append_ms') for p in v['probes']]} ms; RSS {v['hwm_mib']} MiB")
        if dbz_on:
            rate, clients, seconds = s["dbz_latency"]
            for cfg in s["dbz_configs"]:
                v = dbz_latency(ctx, cfg, rate, clients, seconds)
                res["debezium"]["latency"][cfg] = v
                a = v["commit_to_append_ms"]
                log(f"latency Debezium {cfg} {rate}/s: p50 {a['p50']} p99 {a['p99']} max {a['max']} ms")
        if s["callgrind"]:
            log("cost: callgrind on two backlog sizes, 1000-row and single-row transactions")
            res["cost"]["callgrind"] = callgrind_cost(ctx, s["callgrind"], txn=1000)
            res["cost"]["callgrind_txn1"] = callgrind_cost(ctx, tuple(n // 2 for n in s["callgrind"]), txn=1)
            log(f"callgrind: {res['cost']['callgrind'].get('ir_per_event')} instructions per event (1000-row txns), "
                f"{res['cost']['callgrind_txn1'].get('ir_per_event')} (single-row txns)")
        else:
            res["cost"]["callgrind"] = {"skipped": "smoke mode"}
        res["targets"] = evaluate_targets(res)
        ok = True
    except BenchError as e:
        ctx.fail(str(e))
    finally:
        res["failures"] = ctx.failures
        res["elapsed_s"] = round(time.time() - started, 1)
        with open("/proc/loadavg") as f:
            if res.get("meta"):
                res["meta"]["loadavg_after"] = " ".join(f.read().split()[:3])
        CLEANUP.run()
    if ok:
        res.setdefault("targets", [])
        try:
            work = res.pop("_work")
            with open(os.path.join(ctx.out, "bench.json"), "w") as f:
                json.dump(res, f, indent=1, ensure_ascii=False)
            write_markdown(res, os.path.join(ctx.out, "bench.md"))
            res["_work"] = work
            write_chart(res, ctx.out)
        except (BenchError, OSError, KeyError, TypeError) as e:
            ctx.fail(f"writing the results: {e!r}")
        for fn in ("bench.json", "bench.md", "bench.png"):
            p = os.path.join(ctx.out, fn)
            if not os.path.exists(p) or os.path.getsize(p) == 0:
                ctx.fail(f"{p} was not written")
    print_table(res)
    if ctx.failures:
        log(f"FAILED ({len(ctx.failures)} problems); logs kept in {ctx.work}")
        for f_ in ctx.failures:
            log(f"  - {f_.splitlines()[0]}")
        return 1
    if os.environ.get("OUTBOX_BENCH_KEEP_WORK"):
        log(f"work dir kept: {ctx.work}")
    else:
        shutil.rmtree(ctx.work, ignore_errors=True)
    log(f"done in {res['elapsed_s']} s: {ctx.out}/bench.md, bench.json, bench.png")
    return 0


def render_only(out_dir):
    """Writes bench.md and bench.png again from out_dir/bench.json (after a
    change to the report code; measures nothing)."""
    with open(os.path.join(out_dir, "bench.json")) as f:
        res = json.load(f)
    res["sizes"]["latency"] = [tuple(x) for x in res["sizes"]["latency"]]
    res["_work"] = tempfile.mkdtemp(prefix="outbox-bench-render-")
    write_markdown(res, os.path.join(out_dir, "bench.md"))
    write_chart(res, out_dir)
    shutil.rmtree(res["_work"], ignore_errors=True)
    print_table(res)
    return 0


def print_table(res):
    """The summary on stdout: targets, then the catch-up figures."""
    if not res.get("targets"):
        return
    print()
    print(f"{'target':<55} {'goal':<30} {'measured':<40} result")
    for t in res["targets"]:
        print(f"{t['target'][:55]:<55} {t['goal'][:30]:<30} {t['measured'][:40]:<40} "
              f"{'met' if t['met'] else 'MISSED'}")
    for key, ph in res.get("catchup", {}).items():
        s_ = ph.get("summary", {})
        if s_:
            print(f"catch-up ({key}) {ph['title']}: relay {fmt_rate(s_['relay_rate'])}, pg_recvlogical "
                  f"{fmt_rate(s_['pg_recvlogical_rate'])}, kafka ingest {fmt_rate(s_['kafka_ingest_rate'])}")


if __name__ == "__main__":
    sys.exit(main())
