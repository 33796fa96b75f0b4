#pragma once
// Shared helpers for the integration scenarios (integration/tests/NN_*.cpp).
//
// The scenarios run against the real Postgres and Kafka that integration/stack.sh
// starts, and find them through the environment `stack.sh env` prints
// (OUTBOX_TEST_PG, OUTBOX_TEST_BROKERS, OUTBOX_STACK_SH). They never skip: a missing
// variable or an unreachable server is a failure.
//
// Errors: every helper throws std::runtime_error with a message that names what it was
// doing; doctest reports the exception as the failure of the running TEST_CASE. All
// helpers are synchronous and may be called from any thread (each call uses its own
// connection / client handle); nothing is cached between calls.
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace outbox::it {

// Paths baked in at configure time (CMake passes them as compile definitions), so a
// scenario can start `build_dir() + "/outbox-relay"` or read repo files.
std::string repo_root();
std::string build_dir();
// Absolute path of the relay binary of this build tree.
std::string relay_binary();

// Value of environment variable `name`. Throws when it is unset or empty, naming the
// variable and how to set it (eval "$(integration/stack.sh env)").
std::string env_or_fail(const char* name);

// A name unique to this process and call, e.g. unique_name("smoke") ->
// "smoke_4711_1732630000123_1": lowercase letters, digits and '_', so it is valid as
// an unquoted Postgres identifier, a slot name and a Kafka topic. Keep `prefix` short
// (slot names are limited to 63 bytes).
std::string unique_name(std::string_view prefix);

// ---------------------------------------------------------------- Postgres

// One result row; SQL NULL is returned as "" (use `x IS NULL` in the query when the
// difference matters).
using pg_row = std::vector<std::string>;

// Runs `sql` (one or more statements, simple query protocol) on a fresh connection
// to `conninfo` and returns the rows of the last statement (empty for commands).
// Throws with the server's error message (and SQLSTATE) on a connection or query
// error.
std::vector<pg_row> pg_exec(const std::string& conninfo, const std::string& sql);

// First column of the first row of `sql`. Throws when the query returns no row.
std::string pg_scalar(const std::string& conninfo, const std::string& sql);

// ---------------------------------------------------------------- the stack

// Runs `$OUTBOX_STACK_SH args...` (e.g. stack({"kafka-kill"}), stack({"pg-restart",
// "immediate"})) with the test's stdout/stderr, waits for it, and throws when it exits
// non-zero or dies by a signal. No shell is involved, so arguments need no quoting.
void stack(const std::vector<std::string>& args);

// Like stack(), but captures and returns the verb's stdout (stderr still goes to the
// test's), e.g. stack_output({"kafka-leader", topic, "0"}) -> "2\n".
std::string stack_output(const std::vector<std::string>& args);

// Number of Kafka nodes of the stack (OUTBOX_TEST_KAFKA_NODES from `stack.sh env`):
// 1 by default, 3 on the multi-broker cluster. Node ids are 1..kafka_nodes(), so
// stack({"kafka-kill-node", "2"}) addresses broker id 2. Throws when unset or not a
// positive number.
int kafka_nodes();

// ---------------------------------------------------------------- waiting

// Polls `pred` (first at once, then with a backoff growing from 10 ms to 250 ms)
// until it returns true; throws "timed out after N ms waiting for: <what>" when
// `timeout` elapses first. Exceptions from `pred` propagate. `pred` runs on the
// calling thread.
void wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout, std::string_view what);

// ---------------------------------------------------------------- Kafka

struct kafka_record {
    std::string topic;
    std::int32_t partition = -1;
    std::int64_t offset = -1;
    std::optional<std::string> key;                            // nullopt = null key
    std::optional<std::string> value;                          // nullopt = null value (tombstone)
    std::vector<std::pair<std::string, std::string>> headers;  // in record order; null value -> ""
    std::vector<std::string> null_headers;                     // names of the headers whose value is null

    // Value of the first header named `name`, nullopt if there is none.
    std::optional<std::string> header(std::string_view name) const;
};

// Reads topic `topic` from the beginning of every partition with an assign()-based
// consumer (no consumer group, so it works with any broker group protocol) and
// isolation.level=read_committed. Returns once at least `expected_count` records
// arrived AND every partition has been read to its end, so extra records (duplicates)
// are returned too, not cut off. Waits for the topic to exist. Throws when `timeout`
// elapses first (naming the topic and the count seen) or on a consumer error.
// Records are ordered by partition, then offset.
std::vector<kafka_record> consume_all(const std::string& brokers, const std::string& topic,
                                      std::size_t expected_count, std::chrono::milliseconds timeout);

// Broker id leading partition `partition` of `topic`, from one metadata request to
// `brokers` (any live node answers). The request never auto-creates the topic. Throws
// when the topic or partition is unknown or the partition has no leader right now
// (e.g. mid-election): poll it with wait_until to wait for a new leader.
std::int32_t partition_leader(const std::string& brokers, const std::string& topic, std::int32_t partition);

}  // namespace outbox::it
