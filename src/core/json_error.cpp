#include "outbox_relay/json_error.hpp"

#include <nlohmann/json.hpp>

namespace outbox {
namespace {

struct error_locator final : nlohmann::json_sax<nlohmann::json> {
    json_error_site site;
    bool null() override { return true; }
    bool boolean(bool) override { return true; }
    bool number_integer(number_integer_t) override { return true; }
    bool number_unsigned(number_unsigned_t) override { return true; }
    bool number_float(number_float_t, const string_t&) override { return true; }
    bool string(string_t&) override { return true; }
    bool binary(binary_t&) override { return true; }
    bool start_object(std::size_t) override { return true; }
    bool key(string_t&) override { return true; }
    bool end_object() override { return true; }
    bool start_array(std::size_t) override { return true; }
    bool end_array() override { return true; }
    bool parse_error(std::size_t pos, const std::string&, const nlohmann::detail::exception& ex) override {
        site.position = pos;
        // what() reads "[json.exception.parse_error.101] parse error at line
        // L, column C: <reason>"; keep only the reason, callers say where.
        std::string_view w = ex.what();
        const auto col = w.find("column ");
        const auto colon = col == std::string_view::npos ? col : w.find(": ", col);
        site.reason = std::string(colon == std::string_view::npos ? w : w.substr(colon + 2));
        return false;
    }
};

}  // namespace

json_error_site locate_json_error(std::string_view text) {
    error_locator loc;
    nlohmann::json::sax_parse(text, &loc);
    return loc.site;
}

}  // namespace outbox
