#pragma once
// Where a JSON text that failed to parse went wrong, without exceptions: one
// SAX pass that records the error's byte offset and nlohmann's reason. Shared
// by the config file reader and the outbox-message parser.
#include <cstddef>
#include <string>
#include <string_view>

namespace outbox {

struct json_error_site {
    std::size_t position = 0;  // 1-based byte offset past the offending character (nlohmann's)
    std::string reason;        // e.g. "syntax error while parsing object key - ..."; no line/column
};

// Call only for text that does not parse; for valid JSON the result is {0, ""}.
json_error_site locate_json_error(std::string_view text);

}  // namespace outbox
