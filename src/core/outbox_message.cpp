#include "outbox_relay/outbox_message.hpp"

#include "outbox_relay/json_error.hpp"
#include "outbox_relay/outbox.hpp"
#include "outbox_relay/pg_type_oids.hpp"

#include <nlohmann/json.hpp>

namespace outbox {
namespace {

error bad(std::string why) {
    error e(errc::bad_message);
    e.message = std::move(why);
    return e;
}

}  // namespace

result<void> parse_outbox_message(std::string_view content, outbox_message& out) {
    out.rel.columns.clear();
    out.columns.clear();
    out.headers.clear();
    out.storage.clear();
    auto doc = nlohmann::ordered_json::parse(content, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) {
        const json_error_site loc = locate_json_error(content);
        return bad("not valid JSON (byte " + std::to_string(loc.position) + " of " + std::to_string(content.size()) + ")");
    }
    if (!doc.is_object()) return bad("not a JSON object");
    // Every view is taken after the last push_back, so the strings never move
    // under one.
    std::size_t fields = 0;
    for (const auto& [name, v] : doc.items()) fields += name == "headers" ? v.size() * 2 : 2;
    out.storage.reserve(fields);
    struct pending {
        std::size_t name, value;
        pgoutput::column_kind kind;
        std::uint32_t type;
    };
    std::vector<pending> cols;
    std::vector<std::pair<std::size_t, std::size_t>> hdrs;  // name, value (npos = null)
    constexpr std::size_t null_value = static_cast<std::size_t>(-1);
    auto keep = [&](std::string s) {
        out.storage.push_back(std::move(s));
        return out.storage.size() - 1;
    };
    for (const auto& [name, v] : doc.items()) {
        if (name == "headers") {
            if (v.is_null()) continue;
            if (!v.is_object()) return bad("\"headers\" must be an object of header names to strings");
            for (const auto& [hn, hv] : v.items()) {
                if (hn.empty()) return bad("\"headers\" has an empty header name");
                if (reserved_header_name(hn) || hn == header_id)
                    return bad("header \"" + hn + "\" is one the relay writes itself");
                const std::size_t n = keep(hn);
                if (hv.is_null())
                    hdrs.emplace_back(n, null_value);
                else
                    hdrs.emplace_back(n, keep(hv.is_string() ? hv.get<std::string>() : hv.dump()));
            }
            continue;
        }
        pending p{keep(name), 0, pgoutput::column_kind::text, pg_oid::text};
        switch (v.type()) {
            case nlohmann::ordered_json::value_t::null: p.kind = pgoutput::column_kind::null; break;
            case nlohmann::ordered_json::value_t::string: p.value = keep(v.get<std::string>()); break;
            case nlohmann::ordered_json::value_t::boolean:
                p.value = keep(v.get<bool>() ? "true" : "false");
                p.type = pg_oid::bool_;
                break;
            case nlohmann::ordered_json::value_t::number_integer:
            case nlohmann::ordered_json::value_t::number_unsigned:
                p.value = keep(v.dump());
                p.type = pg_oid::int8;
                break;
            case nlohmann::ordered_json::value_t::number_float:
                p.value = keep(v.dump());
                p.type = pg_oid::float8;
                break;
            default:  // object, array
                p.value = keep(v.dump());
                p.type = pg_oid::jsonb;
                break;
        }
        cols.push_back(p);
    }
    for (const pending& p : cols) {
        cached_column c;
        c.name = out.storage[p.name];
        c.type_oid = p.type;
        out.rel.columns.push_back(std::move(c));
        out.columns.push_back({p.kind, p.kind == pgoutput::column_kind::null ? std::string_view()
                                                                             : std::string_view(out.storage[p.value])});
    }
    for (const auto& [n, v] : hdrs)
        out.headers.push_back({out.storage[n], v == null_value ? std::string_view() : std::string_view(out.storage[v]),
                               v == null_value});
    out.rel.generation = 0;
    return {};
}

}  // namespace outbox
