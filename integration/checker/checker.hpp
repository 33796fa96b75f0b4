#pragma once
// outbox-check: compares the rows of an outbox table with the records in
// Kafka. Used by the integration scenarios (as a function) and by issue 5's
// runs (as the `outbox-check` program). Test-side code: infrastructure
// failures (cannot connect, bad template) throw std::runtime_error; findings
// about the data are counted in the report, never thrown.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace outbox::check {

struct check_options {
    std::string postgres;                                 // libpq conninfo
    std::string brokers;                                  // bootstrap.servers
    std::string table = "public.outbox";                  // schema.table
    std::string topic_template = "outbox.event.{aggregatetype}";  // {column} placeholders
    std::string id_column = "id";
    std::string key_column = "aggregateid";
    std::string type_column = "type";
    std::string payload_column = "payload";
    std::string order_column;                             // empty: no per-key order check
    bool allow_duplicates = false;
    // Also check the relay's LSN headers: every record carries
    // outbox-relay.commit-lsn and outbox-relay.seq, and the distinct records of
    // one commit LSN carry seq 0..n-1 exactly once each.
    bool check_lsn_headers = false;
    std::chrono::milliseconds wait{0};                    // re-read until missing=0 or this passes
    // Then read on until no record arrived for this long (late duplicates
    // are counted too); 0 = stop at once.
    std::chrono::milliseconds quiet{2000};
    std::optional<std::size_t> expect;                    // the table must hold exactly this many rows
    std::size_t max_samples = 10;                         // problem descriptions kept in the report
    // Ids whose first record's outbox-relay.commit-lsn header is returned in
    // check_report::captured_commit_lsn (scenarios compare it with the slot).
    std::vector<std::string> capture_ids;
};

struct check_report {
    std::size_t expected = 0;      // rows in the table
    std::size_t delivered = 0;     // rows with at least one matching record
    std::size_t missing = 0;       // rows with no record
    std::size_t duplicated = 0;    // records beyond the first for one id
    std::size_t out_of_order = 0;  // records whose order value is not above the key's previous one
    std::size_t unexpected = 0;    // records with no id header or an id that is no row
    std::size_t mismatched = 0;    // records whose topic/key/value/type differs from the row
    std::size_t lsn_header_errors = 0;  // only with check_lsn_headers
    std::size_t records = 0;       // records read in total
    std::size_t transactions = 0;  // distinct commit-lsn values (with check_lsn_headers)
    std::optional<std::size_t> expect;  // copy of the option, for ok()
    bool allow_duplicates = false;
    std::int64_t max_timestamp_ms = 0;  // newest record timestamp (producer CreateTime)
    std::int64_t min_timestamp_ms = 0;  // oldest record timestamp
    std::vector<std::string> samples;   // first problems, one line each
    std::map<std::string, std::string> captured_commit_lsn;  // id -> header, for capture_ids found

    // True when nothing is missing, duplicated (unless allowed), out of
    // order, unexpected, mismatched, the LSN headers are consistent and the
    // row count equals `expect` when given.
    bool ok() const noexcept;
    // "expected=N delivered=N missing=N duplicated=N out_of_order=N unexpected=N mismatched=N ..."
    std::string summary() const;
};

// Reads every row and the records of every topic the rows route to, from the
// beginning to the high watermark (read_committed, assign-based consumer), and
// counts the differences. With `wait` > 0 it reads again (incrementally) until
// missing == 0 (and the row count reaches `expect`, when given) or the time is
// up. Blocking; call from any one thread. Throws std::runtime_error when
// Postgres or Kafka cannot be reached or the table/template is unusable.
check_report run_check(const check_options& opts);

}  // namespace outbox::check
