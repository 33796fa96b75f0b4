#pragma once
// The text of log lines, pure so it can be unit-tested: quoting values for
// `key=value` lines, escaping control characters (row data reaches the log:
// an event id or topic with a newline must not forge a second line), and
// the `--log-format json` form of a line.
//
// A line's message is `mod=M event=E key=value ...` (io/log.hpp). Values are
// bare when they hold no space, '"', '=', '\' or control character;
// otherwise double-quoted with \" \\ \n \r \t and \xNN escapes.
#include <string>
#include <string_view>

namespace outbox {

enum class log_format { keyvalue, json };

// One value for a key=value line (see above). The empty value is "".
std::string log_quote(std::string_view v);

// `s` with every control character (< 0x20 and 0x7f) written as \n, \r, \t
// or \xNN, and nothing else changed: the last line of defence, applied to
// every whole message, so that one event is always one line.
std::string escape_controls(std::string_view s);

// The JSON object of one line: {"ts":..,"level":..,"mod":..,"event":..,...}
// with every key=value pair of `message` as a string member, in order (a
// repeated key gets a _2, _3 ... suffix), and text that is not key=value
// collected in "msg". Quoted values are unescaped first. Invalid UTF-8 is
// replaced (U+FFFD), so the line is always valid JSON; no newline at the end.
std::string json_log_line(std::string_view ts, std::string_view level, std::string_view message);

}  // namespace outbox
