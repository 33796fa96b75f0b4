#include "outbox_relay/metrics.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>

using outbox::metrics_registry;
using outbox::relay_metrics;

TEST_CASE("exposition_text_of_small_registry") {
    metrics_registry r;
    auto& produced = r.add_counter("app_records_total", "Records seen.");
    auto& lag = r.add_gauge("app_lag_bytes", "Lag in bytes.");
    auto& lat = r.add_histogram("app_latency_seconds", "Latency.", {0.005, 0.5, 10});
    produced.inc();
    produced.inc(41);
    lag.set(1536.25);
    lat.observe(0.001);   // <= 0.005
    lat.observe(0.005);   // le is inclusive
    lat.observe(0.25);    // <= 0.5
    lat.observe(30);      // only +Inf
    const std::string expected =
        "# HELP app_records_total Records seen.\n"
        "# TYPE app_records_total counter\n"
        "app_records_total 42\n"
        "# HELP app_lag_bytes Lag in bytes.\n"
        "# TYPE app_lag_bytes gauge\n"
        "app_lag_bytes 1536.25\n"
        "# HELP app_latency_seconds Latency.\n"
        "# TYPE app_latency_seconds histogram\n"
        "app_latency_seconds_bucket{le=\"0.005\"} 2\n"
        "app_latency_seconds_bucket{le=\"0.5\"} 3\n"
        "app_latency_seconds_bucket{le=\"10\"} 3\n"
        "app_latency_seconds_bucket{le=\"+Inf\"} 4\n"
        "app_latency_seconds_sum 30.256\n"
        "app_latency_seconds_count 4\n";
    CHECK(r.render() == expected);
}

TEST_CASE("labelled_series_share_one_family_header") {
    metrics_registry r;
    auto& a = r.add_counter("x_total", "X.", {{"kind", "a"}});
    auto& b = r.add_counter("x_total", "X.", {{"kind", "b"}});
    a.inc(3);
    CHECK(&a != &b);
    CHECK(&r.add_counter("x_total", "X.", {{"kind", "a"}}) == &a);  // same labels -> same series
    CHECK(r.render() ==
          "# HELP x_total X.\n"
          "# TYPE x_total counter\n"
          "x_total{kind=\"a\"} 3\n"
          "x_total{kind=\"b\"} 0\n");
}

TEST_CASE("label_values_and_help_are_escaped") {
    metrics_registry r;
    r.add_gauge("g", "Line one\nback\\slash \"quoted\"", {{"path", "C:\\dir\n\"x\""}, {"k2", "v"}}).set(-2);
    CHECK(r.render() ==
          "# HELP g Line one\\nback\\\\slash \"quoted\"\n"
          "# TYPE g gauge\n"
          "g{path=\"C:\\\\dir\\n\\\"x\\\"\",k2=\"v\"} -2\n");
}

TEST_CASE("histogram_with_labels_puts_le_last") {
    metrics_registry r;
    r.add_histogram("h", "H.", {1}, {{"op", "ack"}}).observe(0.5);
    CHECK(r.render() ==
          "# HELP h H.\n"
          "# TYPE h histogram\n"
          "h_bucket{op=\"ack\",le=\"1\"} 1\n"
          "h_bucket{op=\"ack\",le=\"+Inf\"} 1\n"
          "h_sum{op=\"ack\"} 0.5\n"
          "h_count{op=\"ack\"} 1\n");
}

TEST_CASE("gauge_special_values") {
    metrics_registry r;
    auto& g = r.add_gauge("g", "G.");
    g.set(std::numeric_limits<double>::infinity());
    CHECK(r.render().ends_with("g +Inf\n"));
    g.set(-std::numeric_limits<double>::infinity());
    CHECK(r.render().ends_with("g -Inf\n"));
    g.set(std::nan(""));
    CHECK(r.render().ends_with("g NaN\n"));
    g.set(0x16B374D848);  // an LSN in bytes prints as an integer
    CHECK(r.render().ends_with("g 97500059720\n"));
}

TEST_CASE("numbers_print_plain_in_usual_range") {
    metrics_registry r;
    auto& g = r.add_gauge("g", "G.");
    auto text_of = [&](double v) {
        g.set(v);
        const std::string t = r.render();
        return t.substr(t.rfind("g ") + 2);
    };
    CHECK(text_of(0.0005) == "0.0005\n");
    CHECK(text_of(0) == "0\n");
    CHECK(text_of(123456789.5) == "123456789.5\n");
    CHECK(text_of(1e20) == "1e+20\n");
    CHECK(text_of(1e-7) == "1e-07\n");
}

TEST_CASE("histogram_ignores_nan") {
    metrics_registry r;
    auto& h = r.add_histogram("h", "H.", {1});
    h.observe(std::nan(""));
    h.observe(2);
    CHECK(h.count() == 1);
    CHECK(h.sum() == 2);
}

TEST_CASE("seconds_since_pg_commit_converts_epochs") {
    // 2024-01-01T00:00:00Z: 1704067200 s Unix, 757382400 s since 2000.
    const std::int64_t pg = 757'382'400'000'000;
    const std::int64_t unix_now = 1'704'067'200'000'000 + 2'500;
    CHECK(outbox::seconds_since_pg_commit(pg, unix_now) == doctest::Approx(0.0025));
    // Clock skew: the commit looks to be in the future.
    CHECK(outbox::seconds_since_pg_commit(pg, unix_now - 10'000) == 0.0);
}

TEST_CASE("relay_metrics_exposes_every_named_metric") {
    relay_metrics m;
    m.records_produced.inc(5);
    m.ignored_truncate.inc();
    m.confirmed_lsn.set(4096);
    m.commit_to_ack.observe(0.003);
    const std::string text = m.registry.render();
    for (const char* line : {
             "# TYPE outbox_relay_records_produced_total counter\n",
             "outbox_relay_records_produced_total 5\n",
             "outbox_relay_records_acked_total 0\n",
             "outbox_relay_records_failed_total 0\n",
             "outbox_relay_duplicates_skipped_total 0\n",
             "outbox_relay_changes_ignored_total{kind=\"update\"} 0\n",
             "outbox_relay_changes_ignored_total{kind=\"delete\"} 0\n",
             "outbox_relay_changes_ignored_total{kind=\"truncate\"} 1\n",
             "outbox_relay_changes_ignored_total{kind=\"message\"} 0\n",
             "outbox_relay_changes_ignored_total{kind=\"other_table\"} 0\n",
             "outbox_relay_transactions_total 0\n",
             "# TYPE outbox_relay_confirmed_lsn gauge\n",
             "outbox_relay_confirmed_lsn 4096\n",
             "outbox_relay_received_lsn 0\n",
             "outbox_relay_inflight_records 0\n",
             "outbox_relay_inflight_bytes 0\n",
             "outbox_relay_backpressure_active 0\n",
             "outbox_relay_pg_reconnects_total 0\n",
             "outbox_relay_producer_recreated_total 0\n",
             "outbox_relay_status_updates_sent_total 0\n",
             "# TYPE outbox_relay_commit_to_ack_seconds histogram\n",
             "outbox_relay_commit_to_ack_seconds_bucket{le=\"0.0005\"} 0\n",
             "outbox_relay_commit_to_ack_seconds_bucket{le=\"0.0025\"} 0\n",
             "outbox_relay_commit_to_ack_seconds_bucket{le=\"0.005\"} 1\n",
             "outbox_relay_commit_to_ack_seconds_bucket{le=\"10\"} 1\n",
             "outbox_relay_commit_to_ack_seconds_bucket{le=\"+Inf\"} 1\n",
             "outbox_relay_commit_to_ack_seconds_count 1\n",
         }) {
        const std::string want = line;
        CAPTURE(want);
        CHECK(text.find(line) != std::string::npos);
    }
    // One HELP and TYPE per family, even with five labelled series.
    std::size_t n = 0;
    for (auto p = text.find("# TYPE outbox_relay_changes_ignored_total"); p != std::string::npos;
         p = text.find("# TYPE outbox_relay_changes_ignored_total", p + 1))
        ++n;
    CHECK(n == 1);
}
