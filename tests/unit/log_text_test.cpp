// Log line text: quoting, control-character escaping (log injection) and the
// JSON form.
#include "outbox_relay/log_text.hpp"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

using namespace outbox;

TEST_SUITE("log_text") {

TEST_CASE("plain_values_stay_bare") {
    CHECK(log_quote("abc") == "abc");
    CHECK(log_quote("0/16B3748") == "0/16B3748");
    CHECK(log_quote("") == "\"\"");
}

TEST_CASE("values_with_spaces_quotes_or_controls_are_quoted_and_escaped") {
    CHECK(log_quote("a b") == "\"a b\"");
    CHECK(log_quote("say \"hi\"") == "\"say \\\"hi\\\"\"");
    CHECK(log_quote("k=v") == "\"k=v\"");
    CHECK(log_quote("back\\slash") == "\"back\\\\slash\"");
    CHECK(log_quote("a\nb") == "\"a\\nb\"");
    CHECK(log_quote("a\rb\tc") == "\"a\\rb\\tc\"");
    CHECK(log_quote(std::string("a\x1b[31mred\x7f", 10)) == "\"a\\x1b[31mred\\x7f\"");
}

TEST_CASE("an_injected_line_stays_one_line") {
    // An event id from a row that tries to forge a second log line.
    const std::string evil = "id1\n2026-01-01T00:00:00Z level=error mod=relay event=fatal";
    const std::string q = log_quote(evil);
    CHECK(q.find('\n') == std::string::npos);
    const std::string line = escape_controls("event=x id=" + evil);
    CHECK(line.find('\n') == std::string::npos);
    CHECK(line == "event=x id=id1\\n2026-01-01T00:00:00Z level=error mod=relay event=fatal");
    CHECK(escape_controls("no controls") == "no controls");
}

TEST_CASE("json_line_has_every_pair_in_order") {
    const std::string line = json_log_line("2026-01-01T00:00:00.000001Z", "info",
                                           "mod=relay event=progress events_per_s=12.5 lag_bytes=0");
    CHECK(line ==
          R"({"ts":"2026-01-01T00:00:00.000001Z","level":"info","mod":"relay","event":"progress","events_per_s":"12.5","lag_bytes":"0"})");
}

TEST_CASE("json_line_unescapes_quoted_values_and_keeps_loose_text") {
    const std::string msg = "mod=relay event=fatal exit_code=21 (record_rejected) reason=" +
                            log_quote("Kafka said \"no\"\nbye") + " x=1";
    const auto j = nlohmann::json::parse(json_log_line("t", "error", msg));
    CHECK(j["event"] == "fatal");
    CHECK(j["reason"] == "Kafka said \"no\"\nbye");
    CHECK(j["x"] == "1");
    CHECK(j["msg"] == "(record_rejected)");
}

TEST_CASE("json_line_survives_repeats_reserved_names_and_bad_utf8") {
    const auto j = nlohmann::json::parse(
        json_log_line("t", "warn", std::string("mod=a level=x ts=y a=1 a=2 bad=\xff\xfe end=\"\\x41\"")));
    CHECK(j["level"] == "warn");
    CHECK(j["level_"] == "x");
    CHECK(j["ts_"] == "y");
    CHECK(j["a"] == "1");
    CHECK(j["a_2"] == "2");
    CHECK(j["bad"].get<std::string>() == "\xEF\xBF\xBD\xEF\xBF\xBD");
    CHECK(j["end"] == "A");
    // An unterminated quote does not run off the end.
    const auto k = nlohmann::json::parse(json_log_line("t", "info", "a=\"open"));
    CHECK(k["a"] == "open");
}

}  // TEST_SUITE
