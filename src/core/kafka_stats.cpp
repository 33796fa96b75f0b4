#include "outbox_relay/kafka_stats.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>

namespace outbox {
namespace {

std::int64_t int_of(const nlohmann::json& o, const char* key) {
    auto it = o.find(key);
    if (it == o.end() || !it->is_number()) return 0;
    return it->is_number_float() ? static_cast<std::int64_t>(it->get<double>()) : it->get<std::int64_t>();
}

}  // namespace

result<kafka_stats> parse_kafka_stats(std::string_view text) {
    auto doc = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded() || !doc.is_object()) {
        error e(errc::bad_value, "statistics");
        e.message = "librdkafka statistics are not a JSON object";
        return e;
    }
    kafka_stats s;
    s.msg_cnt = int_of(doc, "msg_cnt");
    s.msg_size = int_of(doc, "msg_size");
    auto brokers = doc.find("brokers");
    if (brokers != doc.end() && brokers->is_object()) {
        for (const auto& [name, b] : brokers->items()) {
            if (!b.is_object()) continue;
            std::string source;
            if (auto it = b.find("source"); it != b.end() && it->is_string()) source = it->get<std::string>();
            if (source == "logical" || source == "internal") continue;
            ++s.brokers_known;
            s.txretries += int_of(b, "txretries");
            s.txerrs += int_of(b, "txerrs");
            auto st = b.find("state");
            if (st == b.end() || !st->is_string() || st->get_ref<const std::string&>() != "UP") continue;
            ++s.brokers_up;
            if (auto rtt = b.find("rtt"); rtt != b.end() && rtt->is_object())
                s.rtt_avg_max_s = std::max(s.rtt_avg_max_s, static_cast<double>(int_of(*rtt, "avg")) / 1e6);
        }
    }
    return s;
}

}  // namespace outbox
