#pragma once
// Helpers of the exactly-once fault scenarios (integration/faults/NN_*.cpp)
// on top of the issue-4 scenario support: figures read from relay logs, a
// seeded random source whose seed is printed, a "the slot moved to a new
// walsender" wait, and topic configs through librdkafka's admin API (the
// stack's create-topic takes no configs). Test-side code: infrastructure
// failures throw std::runtime_error naming what was being done.
#include "scenario_support.hpp"

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

namespace outbox::it::faults {

using namespace outbox::it::scn;
using outbox::it::exit_status;
using outbox::it::relay_process;

// Figures one relay log shows about its exactly-once replays.
struct replay_figures {
    std::size_t scans = 0;             // event=replay_window_scanned lines
    std::size_t present = 0;           // sum of their present=N: positions already in Kafka, skipped on replay
    std::size_t producer_restarts = 0; // event=producer_restart lines
    std::size_t fatal_lines = 0;       // event=fatal lines
};

// Parses the relay log text `log` (key=value lines). Pure; any thread.
replay_figures replay_figures_of(const std::string& log);

// Wall-clock time of the first line of relay log `log` containing `needle`
// (its leading ISO-8601 UTC timestamp, microseconds); nullopt when there is
// no such line yet. Pure; any thread.
std::optional<std::chrono::system_clock::time_point> log_time_of(const std::string& log, const std::string& needle);

// Value of metric `name` (a line "name value" or "name{...} value") in the
// Prometheus text `text`; nullopt if absent. Sums every series of the name.
std::optional<double> metric_value(const std::string& text, const std::string& name);

// Value of metric `name` on the /metrics of relay `r` (started with
// --metrics-listen 127.0.0.1:0; the port is read from its log); nullopt when
// the relay has not listened yet, is gone, or lacks the metric.
std::optional<double> relay_metric(const relay_process& r, const std::string& name);

// Seed from $OUTBOX_FAULTS_SEED when set (to replay a failure), else from the
// clock. The caller prints it. Never 0.
std::uint64_t pick_seed();

// `n` transaction sizes uniform in [lo, hi], from `rng`.
std::vector<std::size_t> random_sizes(std::mt19937_64& rng, std::size_t n, std::size_t lo, std::size_t hi);

// Waits until the slot is active under a walsender pid other than
// `old_pid` (nullopt = any), or `r` exited (then throws with its log), or the
// deadline passed (returns false). Returns true when streaming.
bool wait_new_walsender(scenario& sc, relay_process& r, std::optional<int> old_pid, clock::time_point deadline);

// One problem-free checker result, printed as MESSAGE lines by the caller.
bool exactly_once(const check::check_report& r);

// ---- Kafka topic configs (librdkafka admin API against `brokers`).

// Creates `topic` with `partitions` partitions, replication factor 1 and the
// given topic configs, and waits (up to 30 s) until its metadata lists every
// partition with a leader. Throws on any error, also "already exists".
void create_topic_with_config(const std::string& brokers, const std::string& topic, int partitions,
                              const std::map<std::string, std::string>& configs);

// Sets topic configs (non-incremental AlterConfigs: configs not given return
// to their defaults) and waits up to 30 s until DescribeConfigs shows every
// given value. Throws on errors or timeout.
void alter_topic_config(const std::string& brokers, const std::string& topic,
                        const std::map<std::string, std::string>& configs);

// Deletes every topic whose name starts with `prefix` + "." (a scenario's
// topics), so that the shared broker does not accumulate partitions (each one
// lengthens its recovery after a SIGKILL). Best effort: errors are ignored.
// Returns how many topics were asked to be deleted.
std::size_t delete_topics_with_prefix(const std::string& brokers, const std::string& prefix);

// Declared BEFORE the scenario, so that it runs after the scenario's
// destructor stopped the relays (a running relay would re-create a topic).
// Set `prefix` once the scenario exists. Honours OUTBOX_IT_KEEP=1.
struct topic_cleanup {
    std::string prefix;
    topic_cleanup() = default;
    topic_cleanup(const topic_cleanup&) = delete;
    topic_cleanup& operator=(const topic_cleanup&) = delete;
    ~topic_cleanup();
};

// Current value of topic config `name`; throws on errors.
std::string describe_topic_config(const std::string& brokers, const std::string& topic, const std::string& name);

}  // namespace outbox::it::faults
