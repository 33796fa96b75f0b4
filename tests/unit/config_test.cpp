#include "outbox_relay/config.hpp"

#include <doctest/doctest.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

using outbox::build_config;
using outbox::delivery_mode;
using outbox::redact_conninfo;
using outbox::relay_config;
using outbox::default_placements;
using outbox::envelope_kind;
using outbox::missing_policy;
using outbox::placement;
using outbox::placement_kind;

namespace {

using env_t = std::map<std::string, std::string>;
using flags_t = std::vector<std::pair<std::string, std::string>>;

const flags_t required_flags{{"postgres", "host=db dbname=app"}, {"brokers", "k1:9092"}};

flags_t with_required(flags_t extra) {
    flags_t f = required_flags;
    f.insert(f.end(), extra.begin(), extra.end());
    return f;
}

// Builds expecting success.
relay_config ok(std::string_view json, const env_t& env, const flags_t& flags) {
    auto r = build_config(json, "relay.json", env, flags);
    if (r.has_error())
        INFO("key=" << r.error().field << " source=" << r.error().source << " message=" << r.error().message);
    REQUIRE(r.has_value());
    return *r;
}

// The error detail, with the option key as `key` (as the tests read).
struct config_error {
    std::string key, source, message;
};

// Builds expecting failure; returns the error detail.
config_error bad(std::string_view json, const env_t& env, const flags_t& flags) {
    auto r = build_config(json, "relay.json", env, flags);
    REQUIRE(r.has_error());
    CHECK(r.error() == outbox::errc::bad_config);
    CHECK_FALSE(r.error().message.empty());
    return {r.error().field, r.error().source, r.error().message};
}

config_error bad_flag(std::string name, std::string value) {
    return bad("", {}, with_required({{std::move(name), std::move(value)}}));
}

}  // namespace

TEST_CASE("defaults_with_only_required_options") {
    auto c = ok("", {}, required_flags);
    const relay_config d;
    CHECK(c.postgres == "host=db dbname=app");
    CHECK(c.brokers == "k1:9092");
    CHECK(c.slot == d.slot);
    CHECK(c.publication == d.publication);
    CHECK(c.routing.schema == "public");
    CHECK(c.routing.table == "outbox");
    CHECK(c.routing.topic_template == "outbox.event.${routedByValue}");
    CHECK(c.routing.route_by == "aggregatetype");
    CHECK(c.routing.placements == default_placements());
    CHECK(c.routing.envelope == envelope_kind::raw);
    CHECK(c.message_prefix == "outbox");
    REQUIRE(c.tables.size() == 1);
    CHECK(c.tables[0].table == "outbox");
    CHECK(c.messages.topic_template == c.routing.topic_template);
    CHECK(c.delivery == delivery_mode::exactly_once);
    CHECK(c.max_inflight_records == d.max_inflight_records);
    CHECK(c.status_interval == d.status_interval);
    CHECK(c.create_slot);
    CHECK(c.kafka.empty());
}

TEST_CASE("every_option_from_flags") {
    auto c = ok("", {},
                with_required({{"slot", "s1"},
                               {"publication", "pub1"},
                               {"table", "billing.Events"},
                               {"topic", "t.{kind}"},
                               {"id-column", "event_id"},
                               {"route-by", "kind"},
                               {"key-column", "entity"},
                               {"timestamp-column", "created_at"},
                               {"placement", "type:header:eventType, region:partition"},
                               {"additional-missing", "ignore"},
                               {"tombstone-on-empty-payload", "true"},
                               {"envelope", "cloudevents"},
                               {"ce-source", "/orders"},
                               {"message-prefix", "events"},
                               {"type-column", "event_type"},
                               {"payload-column", "body"},
                               {"X", "linger.ms=5"},
                               {"X", "compression.type=lz4"},
                               {"delivery", "at-least-once"},
                               {"max-inflight-records", "5000"},
                               {"max-inflight-bytes", "1048576"},
                               {"status-interval-ms", "2000"},
                               {"drain-timeout-ms", "7000"},
                               {"reconnect-backoff-max-ms", "3000"},
                               {"metrics-listen", "127.0.0.1:9187"},
                               {"log-level", "debug"},
                               {"create-slot", "false"}}));
    CHECK(c.slot == "s1");
    CHECK(c.publication == "pub1");
    CHECK(c.routing.schema == "billing");
    CHECK(c.routing.table == "Events");
    CHECK(c.routing.topic_template == "t.{kind}");
    CHECK(c.routing.columns.id == "event_id");
    CHECK(c.routing.route_by == "kind");
    CHECK(c.routing.columns.key == "entity");
    CHECK(c.routing.columns.timestamp == "created_at");
    CHECK(c.routing.placements == std::vector<placement>{{"type", placement_kind::header, "eventType"},
                                                         {"region", placement_kind::partition, "region"}});
    CHECK(c.routing.additional_missing == missing_policy::ignore);
    CHECK(c.routing.tombstone_on_empty_payload);
    CHECK(c.routing.envelope == envelope_kind::cloudevents);
    CHECK(c.routing.ce_source == "/orders");
    CHECK(c.message_prefix == "events");
    REQUIRE(c.tables.size() == 1);
    CHECK(c.tables[0].columns.key == "entity");
    CHECK(c.routing.columns.type == "event_type");
    CHECK(c.routing.columns.payload == "body");
    CHECK(c.kafka == std::map<std::string, std::string>{{"compression.type", "lz4"}, {"linger.ms", "5"}});
    CHECK(c.delivery == delivery_mode::at_least_once);
    CHECK(c.max_inflight_records == 5000);
    CHECK(c.max_inflight_bytes == 1048576);
    CHECK(c.status_interval == std::chrono::milliseconds(2000));
    CHECK(c.drain_timeout == std::chrono::milliseconds(7000));
    CHECK(c.reconnect_backoff_max == std::chrono::milliseconds(3000));
    CHECK(c.metrics_listen == "127.0.0.1:9187");
    CHECK(c.log_level == "debug");
    CHECK_FALSE(c.create_slot);
}

TEST_CASE("every_option_from_file") {
    const char* json = R"({
        "postgres": "host=db", "brokers": "k:9092", "slot": "fs", "table": "events",
        "max-inflight-records": 42, "create-slot": false, "delivery": "at-least-once",
        "kafka": {"linger.ms": 10, "enable.gapless.guarantee": true, "client.rack": "r1"}
    })";
    auto c = ok(json, {}, {});
    CHECK(c.postgres == "host=db");
    CHECK(c.brokers == "k:9092");
    CHECK(c.slot == "fs");
    CHECK(c.routing.schema == "public");
    CHECK(c.routing.table == "events");
    CHECK(c.max_inflight_records == 42);
    CHECK_FALSE(c.create_slot);
    CHECK(c.delivery == delivery_mode::at_least_once);
    CHECK(c.kafka.at("linger.ms") == "10");
    CHECK(c.kafka.at("enable.gapless.guarantee") == "true");
    CHECK(c.kafka.at("client.rack") == "r1");
}

TEST_CASE("every_option_from_env") {
    env_t env{{"OUTBOX_RELAY_POSTGRES", "host=envdb"},
              {"OUTBOX_RELAY_BROKERS", "e:9092"},
              {"OUTBOX_RELAY_MAX_INFLIGHT_BYTES", "4096"},
              {"OUTBOX_RELAY_KEY_COLUMN", "entity"},
              {"OUTBOX_RELAY_KAFKA_QUEUE_BUFFERING_MAX_MS", "3"},
              {"OUTBOX_RELAY_CONFIG", "/etc/relay.json"},  // read by main, not a typo
              {"PATH", "/usr/bin"}};
    auto c = ok("", env, {});
    CHECK(c.postgres == "host=envdb");
    CHECK(c.brokers == "e:9092");
    CHECK(c.max_inflight_bytes == 4096);
    CHECK(c.routing.columns.key == "entity");
    CHECK(c.kafka == std::map<std::string, std::string>{{"queue.buffering.max.ms", "3"}});
}

TEST_CASE("precedence_flag_over_env_over_file") {
    const char* json = R"({"postgres": "host=file", "brokers": "f:1", "slot": "from_file",
                           "publication": "pub_file", "log-level": "warn"})";
    env_t env{{"OUTBOX_RELAY_SLOT", "from_env"}, {"OUTBOX_RELAY_PUBLICATION", "pub_env"}};
    flags_t flags{{"slot", "from_flag"}};
    auto c = ok(json, env, flags);
    CHECK(c.slot == "from_flag");         // flag beats env and file
    CHECK(c.publication == "pub_env");    // env beats file
    CHECK(c.log_level == "warn");         // file beats default
    CHECK(c.postgres == "host=file");
}

TEST_CASE("precedence_per_kafka_property") {
    const char* json = R"({"postgres": "p", "brokers": "b:1",
                           "kafka": {"linger.ms": "1", "batch.size": "100", "client.rack": "f"}})";
    env_t env{{"OUTBOX_RELAY_KAFKA_LINGER_MS", "2"}, {"OUTBOX_RELAY_KAFKA_BATCH_SIZE", "200"}};
    flags_t flags{{"X", "linger.ms=3"}, {"X", "linger.ms=4"}};
    auto c = ok(json, env, flags);
    CHECK(c.kafka.at("linger.ms") == "4");   // last flag wins
    CHECK(c.kafka.at("batch.size") == "200");  // env over file
    CHECK(c.kafka.at("client.rack") == "f");
}

TEST_CASE("postgres_required") {
    auto e = bad("", {}, {{"brokers", "b:1"}});
    CHECK(e.key == "postgres");
    CHECK(e.message.find("OUTBOX_RELAY_POSTGRES") != std::string::npos);
}

TEST_CASE("brokers_required") {
    auto e = bad("", {}, {{"postgres", "host=x"}});
    CHECK(e.key == "brokers");
}

TEST_CASE("empty_postgres_rejected_without_echo") {
    auto e = bad("", {}, {{"postgres", ""}, {"brokers", "b:1"}});
    CHECK(e.key == "postgres");
    CHECK(e.source == "--postgres");
}

TEST_CASE("bad_brokers_list") {
    for (const char* v : {"a:1,,b:2", ",a:1", "a:1 b:2"}) {
        CAPTURE(v);
        CHECK(bad("", {}, {{"postgres", "p"}, {"brokers", v}}).key == "brokers");
    }
}

TEST_CASE("bad_slot_name") {
    for (const char* v : {"", "Upper", "with-dash", "sp ace",
                          "a234567890123456789012345678901234567890123456789012345678901234"}) {
        CAPTURE(v);
        auto e = bad_flag("slot", v);
        CHECK(e.key == "slot");
        CHECK(e.source == "--slot");
    }
    // 63 characters is the limit, not an error.
    CHECK(ok("", {}, with_required({{"slot", std::string(63, 'a')}})).slot.size() == 63);
}

TEST_CASE("bad_slot_name_from_env_names_variable") {
    auto e = bad("", {{"OUTBOX_RELAY_SLOT", "Bad-Slot"}}, required_flags);
    CHECK(e.key == "slot");
    CHECK(e.source == "OUTBOX_RELAY_SLOT");
}

TEST_CASE("bad_slot_name_from_file_names_file_and_key") {
    auto e = bad(R"({"slot": "Bad-Slot"})", {}, required_flags);
    CHECK(e.key == "slot");
    CHECK(e.source == "relay.json:slot");
}

TEST_CASE("bad_publication_name") {
    for (const char* v : {"", "1pub", "pub-x", "pub;drop", "a\"b"}) {
        CAPTURE(v);
        CHECK(bad_flag("publication", v).key == "publication");
    }
}

TEST_CASE("bad_table") {
    for (const char* v : {"", ".outbox", "public.", "a.b.c", "my table", "public.out-box"}) {
        CAPTURE(v);
        CHECK(bad_flag("table", v).key == "table");
    }
}

TEST_CASE("bad_column_name") {
    for (const char* opt : {"id-column", "route-by", "key-column", "type-column", "payload-column",
                            "timestamp-column", "traceparent-column"}) {
        CAPTURE(opt);
        CHECK(bad_flag(opt, "no good").key == opt);
    }
}

TEST_CASE("bad_topic_template") {
    for (const char* v : {"", "x.{", "x.}", "x.{}", "x y"}) {
        CAPTURE(v);
        auto e = bad_flag("topic", v);
        CHECK(e.key == "topic");
        CHECK(e.source == "--topic");
    }
}

TEST_CASE("bad_delivery") {
    auto e = bad_flag("delivery", "exactly_once");
    CHECK(e.key == "delivery");
}

TEST_CASE("numbers_must_be_positive_integers_in_range") {
    struct c {
        const char* opt;
        const char* value;
    };
    for (c t : {c{"max-inflight-records", "0"}, c{"max-inflight-records", "-5"}, c{"max-inflight-records", "1e3"},
                c{"max-inflight-records", " 5"}, c{"max-inflight-records", "10000001"},
                c{"max-inflight-bytes", "0"}, c{"max-inflight-bytes", "99999999999999999999999"},
                c{"status-interval-ms", "10001"}, c{"status-interval-ms", "99"}, c{"drain-timeout-ms", "0"},
                c{"drain-timeout-ms", "abc"}, c{"reconnect-backoff-max-ms", ""}}) {
        CAPTURE(t.opt);
        CAPTURE(t.value);
        auto e = bad_flag(t.opt, t.value);
        CHECK(e.key == t.opt);
        CHECK(e.message.find("integer") != std::string::npos);
    }
}

TEST_CASE("negative_number_in_file_rejected") {
    auto e = bad(R"({"drain-timeout-ms": -1})", {}, required_flags);
    CHECK(e.key == "drain-timeout-ms");
    CHECK(e.source == "relay.json:drain-timeout-ms");
}

TEST_CASE("float_or_object_value_in_file_rejected") {
    CHECK(bad(R"({"max-inflight-records": 1.5})", {}, required_flags).key == "max-inflight-records");
    CHECK(bad(R"({"slot": {"a": 1}})", {}, required_flags).key == "slot");
    CHECK(bad(R"({"slot": null})", {}, required_flags).key == "slot");
}

TEST_CASE("bad_metrics_listen") {
    for (const char* v : {"host:", "host:65536", "host:x", "::1:9100", "[]:1", "65536", ":x", ":"}) {
        CAPTURE(v);
        CHECK(bad_flag("metrics-listen", v).key == "metrics-listen");
    }
    CHECK(ok("", {}, with_required({{"metrics-listen", "[::1]:9100"}})).metrics_listen == "[::1]:9100");
    CHECK(ok("", {}, with_required({{"metrics-listen", "0.0.0.0:9100"}})).metrics_listen == "0.0.0.0:9100");
}

TEST_CASE("bad_log_level") { CHECK(bad_flag("log-level", "verbose").key == "log-level"); }

TEST_CASE("bad_create_slot") {
    for (const char* v : {"yes", "1", "TRUE", ""}) {
        CAPTURE(v);
        CHECK(bad_flag("create-slot", v).key == "create-slot");
    }
}

TEST_CASE("unknown_json_key_is_named") {
    auto e = bad(R"({"slott": "x"})", {}, required_flags);
    CHECK(e.key == "slott");
    CHECK(e.source == "relay.json:slott");
    CHECK(e.message.find("slott") != std::string::npos);
}

TEST_CASE("json_uses_kafka_not_X") {
    CHECK(bad(R"({"X": "linger.ms=1"})", {}, required_flags).key == "X");
    CHECK(bad(R"({"kafka": "linger.ms=1"})", {}, required_flags).key == "kafka");
    CHECK(bad(R"({"kafka": {"linger.ms": [1]}})", {}, required_flags).source == "relay.json:kafka.linger.ms");
}

TEST_CASE("json_parse_error_names_file_and_line") {
    const char* json = "{\n  \"slot\": \"a\",\n  \"publication\" \"p\"\n}\n";
    auto e = bad(json, {}, required_flags);
    CHECK(e.source == "relay.json:3");
    CHECK(e.message.find("relay.json:3") != std::string::npos);
}

TEST_CASE("json_parse_error_at_end_of_input") {
    auto e = bad("{\n\"slot\": \"a\",\n", {}, required_flags);
    CHECK(e.source.starts_with("relay.json:"));
    CHECK(e.source != "relay.json:1");
}

TEST_CASE("json_top_level_must_be_object") {
    auto e = bad("[1, 2]", {}, required_flags);
    CHECK(e.source == "relay.json");
}

TEST_CASE("unknown_env_variable_is_named") {
    auto e = bad("", {{"OUTBOX_RELAY_SLOTT", "x"}}, required_flags);
    CHECK(e.key == "OUTBOX_RELAY_SLOTT");
    CHECK(e.source == "OUTBOX_RELAY_SLOTT");
}

TEST_CASE("unknown_flag_is_named") {
    auto e = bad_flag("slott", "x");
    CHECK(e.source == "--slott");
}

TEST_CASE("X_without_equals_rejected") {
    auto e = bad_flag("X", "linger.ms");
    CHECK(e.key == "X");
    CHECK(bad_flag("X", "=5").key == "X");
}

TEST_CASE("kafka_property_forced_by_relay_rejected") {
    for (const char* p : {"enable.idempotence=false", "acks=1", "request.required.acks=1",
                          "message.timeout.ms=30000", "delivery.timeout.ms=1", "bootstrap.servers=x:1"}) {
        CAPTURE(p);
        auto e = bad_flag("X", p);
        CHECK(e.key == "kafka");
        CHECK(e.source.starts_with("-X "));
    }
    auto e = bad("", {{"OUTBOX_RELAY_KAFKA_ACKS", "0"}}, required_flags);
    CHECK(e.source == "OUTBOX_RELAY_KAFKA_ACKS");
}

TEST_CASE("kafka_property_name_must_look_like_one") {
    CHECK(bad_flag("X", "Linger Ms=5").key == "kafka");
}

TEST_CASE("config_path_flag_is_not_an_option") {
    auto c = ok("", {}, with_required({{"config", "/etc/relay.json"}}));
    CHECK(c.slot == relay_config{}.slot);
}

TEST_CASE("redact_keyword_value_password") {
    CHECK(redact_conninfo("host=db user=app password=s3cret dbname=x") ==
          "host=db user=app password=******** dbname=x");
    CHECK(redact_conninfo("password=s3cret") == "password=********");
    CHECK(redact_conninfo("host=db password = s3cret port=5432") == "host=db password = ******** port=5432");
}

TEST_CASE("redact_quoted_password") {
    const auto r = redact_conninfo(R"(host=db password='it\'s a secret' user=app)");
    CHECK(r == "host=db password=******** user=app");
    CHECK(r.find("secret") == std::string::npos);
}

TEST_CASE("redact_keeps_conninfo_without_password") {
    CHECK(redact_conninfo("host=db user=app dbname='my db'") == "host=db user=app dbname='my db'");
    CHECK(redact_conninfo("") == "");
}

TEST_CASE("redact_uri_userinfo") {
    CHECK(redact_conninfo("postgres://app:s3cret@db:5432/app") == "postgres://app:********@db:5432/app");
    CHECK(redact_conninfo("postgresql://app:s3cret@db1,db2/app?sslmode=require") ==
          "postgresql://app:********@db1,db2/app?sslmode=require");
    CHECK(redact_conninfo("postgres://app@db/app") == "postgres://app@db/app");
    CHECK(redact_conninfo("postgres://db/app") == "postgres://db/app");
}

TEST_CASE("redact_uri_query_password") {
    const auto r = redact_conninfo("postgresql://db/app?user=app&password=s3cret&sslmode=require");
    CHECK(r == "postgresql://db/app?user=app&password=********&sslmode=require");
}

TEST_CASE("redact_malformed_hides_the_rest") {
    const auto r = redact_conninfo("host=db password s3cret");
    CHECK(r.find("s3cret") == std::string::npos);
    CHECK(r.starts_with("host=db"));
}

TEST_CASE("issue8_options_from_flags") {
    auto c = ok("", {},
                with_required({{"scan-timeout-ms", "15000"},
                               {"pg-silence-timeout-ms", "5000"},
                               {"producer-restart-limit", "3"}}));
    CHECK(c.scan_timeout == std::chrono::milliseconds(15000));
    CHECK(c.pg_silence_timeout == std::chrono::milliseconds(5000));
    CHECK(c.producer_restart_limit == 3);
    CHECK(bad_flag("pg-silence-timeout-ms", "999").key == "pg-silence-timeout-ms");
    CHECK(bad_flag("producer-restart-limit", "0").key == "producer-restart-limit");
    CHECK(bad_flag("scan-timeout-ms", "10").key == "scan-timeout-ms");
}

TEST_CASE("inflight_limits_stay_within_what_librdkafka_can_queue") {
    CHECK(ok("", {}, with_required({{"max-inflight-records", "5000000"}})).max_inflight_records == 5'000'000);
    CHECK(bad_flag("max-inflight-records", "5000001").key == "max-inflight-records");
    CHECK(bad_flag("max-inflight-bytes", "1073741825").key == "max-inflight-bytes");
}

TEST_CASE("kafka_queue_limits_are_the_relays") {
    // The relay sizes librdkafka's queue above its own in-flight limits; a
    // smaller one would make librdkafka refuse records before backpressure.
    for (const char* p : {"queue.buffering.max.messages=10", "queue.buffering.max.kbytes=10", "transactional.id=x"}) {
        CAPTURE(p);
        auto e = bad_flag("X", p);
        CHECK(e.key == "kafka");
        CHECK(e.message.find("cannot be set") != std::string::npos);
    }
    CHECK(outbox::refused_kafka_property("linger.ms").empty());
    CHECK_FALSE(outbox::refused_kafka_property("acks").empty());
}

TEST_CASE("option_table_defaults_read_back_as_the_defaults") {
    // --help prints show(relay_config{}); every printed default must parse
    // back to the same value, so the defaults live in one place only.
    const relay_config d;
    for (const auto& o : outbox::options()) {
        CAPTURE(o.name);
        CHECK_FALSE(o.help.empty());
        if (o.required) continue;
        relay_config c;
        const std::string shown = o.show(d);
        if (shown.empty()) continue;  // "off"
        CHECK(o.apply(c, shown).empty());
        CHECK(o.show(c) == shown);
    }
    CHECK(outbox::env_name_of("max-inflight-records") == "OUTBOX_RELAY_MAX_INFLIGHT_RECORDS");
}

TEST_CASE("every_option_is_reachable_from_env_and_file") {
    for (const auto& o : outbox::options()) {
        if (o.required) continue;
        CAPTURE(o.name);
        const std::string v = o.show(relay_config{});
        if (v.empty()) continue;
        ok("", {{outbox::env_name_of(o.name), v}}, required_flags);
        ok("{\"" + std::string(o.name) + "\": \"" + v + "\"}", {}, required_flags);
    }
}

// ---- issue 11: operability options

TEST_CASE("metrics_listen_bare_port_binds_loopback") {
    CHECK(ok("", {}, with_required({{"metrics-listen", "9187"}})).metrics_listen == "127.0.0.1:9187");
    CHECK(ok("", {}, with_required({{"metrics-listen", ":9187"}})).metrics_listen == "127.0.0.1:9187");
    CHECK(ok("", {}, with_required({{"metrics-listen", "0"}})).metrics_listen == "127.0.0.1:0");
    CHECK(ok("", {}, with_required({{"metrics-listen", ""}})).metrics_listen.empty());
}

TEST_CASE("issue11_options_parse_and_check_ranges") {
    auto c = ok("", {}, with_required({{"metrics-max-connections", "10"}, {"ready-stall-ms", "5000"},
                                       {"slot-status-interval-ms", "0"}, {"progress-interval-ms", "1000"},
                                       {"log-format", "json"}, {"postgres-password-file", "/run/secrets/pg"}}));
    CHECK(c.metrics_max_connections == 10);
    CHECK(c.ready_stall == std::chrono::milliseconds(5000));
    CHECK(c.slot_status_interval == std::chrono::milliseconds(0));
    CHECK(c.progress_interval == std::chrono::milliseconds(1000));
    CHECK(c.log_fmt == outbox::log_format::json);
    CHECK(c.postgres_password_file == "/run/secrets/pg");
    CHECK(c.postgres_password.empty());  // read by the shell, never an option
    const relay_config d;
    CHECK(d.metrics_max_connections == 64);
    CHECK(d.ready_stall == std::chrono::milliseconds(30000));
    CHECK(d.log_fmt == outbox::log_format::keyvalue);
    CHECK(bad_flag("metrics-max-connections", "0").key == "metrics-max-connections");
    CHECK(bad_flag("slot-status-interval-ms", "100").key == "slot-status-interval-ms");
    CHECK(bad_flag("progress-interval-ms", "10").key == "progress-interval-ms");
    CHECK(bad_flag("log-format", "xml").key == "log-format");
    CHECK(bad_flag("ready-stall-ms", "x").key == "ready-stall-ms");
    CHECK(ok("", {{"OUTBOX_RELAY_LOG_FORMAT", "json"}}, required_flags).log_fmt == outbox::log_format::json);
}

TEST_CASE("secret_options_show_redacted") {
    relay_config c;
    c.postgres = "host=db password=pw1 sslpassword=pw2";
    c.postgres_password = "pw3";
    bool any = false;
    for (const auto& o : outbox::options()) {
        if (!o.secret) continue;
        any = true;
        CAPTURE(o.name);
        const std::string shown = o.show(c);
        for (const char* s : {"pw1", "pw2", "pw3"}) CHECK(shown.find(s) == std::string::npos);
    }
    CHECK(any);
}

TEST_CASE("effective_config_json_is_a_config_file_with_secrets_redacted") {
    auto c = ok("", {{"OUTBOX_RELAY_KAFKA_SASL_PASSWORD", "pw4"}},
                with_required({{"postgres", "postgresql://app:pw1@db/app?sslpassword=pw2"},
                               {"X", "ssl.key.password=pw5"},
                               {"X", "linger.ms=7"}}));
    c.postgres_password = "pw3";
    const std::string text = outbox::effective_config_json(c);
    for (const char* s : {"pw1", "pw2", "pw3", "pw4", "pw5"}) CHECK(text.find(s) == std::string::npos);
    CHECK(text.find("\"linger.ms\": \"7\"") != std::string::npos);
    CHECK(text.find("\"sasl.password\": \"********\"") != std::string::npos);
    // Every option is in it, and it reads back as a config file (secrets aside).
    for (const auto& o : outbox::options()) CHECK(text.find("\"" + std::string(o.name) + "\"") != std::string::npos);
    relay_config back = ok(text, {}, {});
    CHECK(back.slot == c.slot);
    CHECK(back.kafka.at("linger.ms") == "7");
}

TEST_CASE("effective_config_json_keeps_several_tables") {
    const char* json = R"({
        "postgres": "host=db", "brokers": "k:9092", "topic": "events.{aggregatetype}",
        "tables": [{"table": "orders.outbox"}, {"table": "billing.events", "key-column": "account", "topic": "billing"}],
        "messages": {"topic": "msg.x"}
    })";
    auto c = ok(json, {}, {});
    const std::string text = outbox::effective_config_json(c);
    relay_config back = ok(text, {}, {});
    REQUIRE(back.tables.size() == 2);
    CHECK(back.tables[1].schema == "billing");
    CHECK(back.tables[1].columns.key == "account");
    CHECK(back.tables[1].topic_template == "billing");
    CHECK(back.tables[0].topic_template == "events.{aggregatetype}");
    CHECK(back.messages.topic_template == "msg.x");
}

// ---------------------------------------------------------------- routes

TEST_CASE("tables_in_the_file_take_the_top_level_route_options_as_defaults") {
    const char* json = R"({
        "postgres": "host=db", "brokers": "k:9092",
        "topic": "events.{aggregatetype}", "envelope": "json",
        "tables": [
            {"table": "orders.outbox", "placement": ["type:header:eventType", "region:envelope"]},
            {"table": "billing.events", "key-column": "account", "topic": "billing", "envelope": "raw",
             "placement": ""}
        ],
        "messages": {"topic": "msg.${routedByValue}", "envelope": "cloudevents"}
    })";
    auto c = ok(json, {}, {});
    REQUIRE(c.tables.size() == 2);
    CHECK(c.tables[0].schema == "orders");
    CHECK(c.tables[0].table == "outbox");
    CHECK(c.tables[0].topic_template == "events.{aggregatetype}");  // from the top level
    CHECK(c.tables[0].envelope == envelope_kind::json);
    CHECK(c.tables[0].placements == std::vector<placement>{{"type", placement_kind::header, "eventType"},
                                                           {"region", placement_kind::envelope, "region"}});
    CHECK(c.tables[1].schema == "billing");
    CHECK(c.tables[1].columns.key == "account");
    CHECK(c.tables[1].topic_template == "billing");
    CHECK(c.tables[1].placements.empty());
    CHECK(c.messages.topic_template == "msg.${routedByValue}");
    CHECK(c.messages.envelope == envelope_kind::cloudevents);
    CHECK(c.messages.columns.key == "aggregateid");
}

TEST_CASE("route_errors_name_the_entry") {
    SUBCASE("table and tables") {
        auto e = bad(R"({"postgres": "h", "brokers": "k:1", "table": "a", "tables": [{"table": "b"}]})", {}, {});
        CHECK(e.key == "table");
    }
    SUBCASE("an entry without table") {
        auto e = bad(R"({"postgres": "h", "brokers": "k:1", "tables": [{"table": "a"}, {"topic": "x"}]})", {}, {});
        CHECK(e.key == "tables");
        CHECK(e.source == "relay.json:tables[1]");
    }
    SUBCASE("a table twice") {
        auto e = bad(R"({"postgres": "h", "brokers": "k:1", "tables": [{"table": "a"}, {"table": "public.a"}]})", {},
                     {});
        CHECK(e.message.find("public.a appears twice") != std::string::npos);
    }
    SUBCASE("a non-route option in an entry") {
        auto e = bad(R"({"postgres": "h", "brokers": "k:1", "tables": [{"table": "a", "slot": "s"}]})", {}, {});
        CHECK(e.source == "relay.json:tables[0].slot");
    }
    SUBCASE("a bad value in an entry") {
        auto e = bad(R"({"postgres": "h", "brokers": "k:1", "tables": [{"table": "a", "envelope": "xml"}]})", {}, {});
        CHECK(e.key == "envelope");
        CHECK(e.source == "relay.json:tables[0].envelope");
    }
    SUBCASE("a bad template in an entry") {
        auto e = bad(R"({"postgres": "h", "brokers": "k:1", "tables": [{"table": "a", "topic": "x.{"}]})", {}, {});
        CHECK(e.key == "topic");
        CHECK(e.source == "relay.json:tables[0].topic");
    }
    SUBCASE("table in messages") {
        auto e = bad(R"({"postgres": "h", "brokers": "k:1", "messages": {"table": "a"}})", {}, {});
        CHECK(e.source == "relay.json:messages.table");
    }
}

TEST_CASE("bad_placements") {
    for (const char* v : {"type", "type:body", "type:header:a:b", ":header", "type:header:", "a:header,,b:header"}) {
        CAPTURE(v);
        auto e = bad_flag("placement", v);
        CHECK(e.key == "placement");
        CHECK(e.source == "--placement");
    }
    // Valid alone, refused by the route.
    auto e = bad("", {}, with_required({{"placement", "region:envelope"}}));
    CHECK(e.key == "placement");
    CHECK(e.message.find("--envelope json") != std::string::npos);
    e = bad("", {}, with_required({{"placement", "a:partition,b:partition"}}));
    CHECK(e.message.find("only one column") != std::string::npos);
    e = bad("", {}, with_required({{"placement", "a:header:outbox-relay.seq"}}));
    CHECK(e.message.find("relay's own") != std::string::npos);
    e = bad("", {}, with_required({{"placement", "a:header:ce_type"}, {"envelope", "cloudevents"}}));
    CHECK(e.message.find("CloudEvents") != std::string::npos);
}

TEST_CASE("route_options_show_what_they_read") {
    relay_config c;
    for (const auto& o : outbox::options()) {
        if (o.name != "placement" && o.name != "envelope" && o.name != "topic" && o.name != "additional-missing")
            continue;
        CAPTURE(o.name);
        const std::string shown = o.show(c);
        relay_config back;
        CHECK(o.apply(back, shown).empty());
        CHECK(o.show(back) == shown);
    }
    CHECK(outbox::placements_text({{"a", placement_kind::header, "b"}, {"c", placement_kind::partition, "c"}}) ==
          "a:header:b,c:partition");
}
