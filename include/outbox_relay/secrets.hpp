#pragma once
// Which configuration values are secrets, and how they are hidden: the ONE
// list for libpq conninfo keywords and librdkafka properties. Every place that
// prints a conninfo, a Kafka property or an option (logs, errors,
// --print-config, `status`) goes through here.
//
// Pure: no I/O. Reading a secret from a file (`--postgres-password-file`,
// `-X prop=@file:PATH`) is the shell's job; file_reference() only recognises
// the syntax.
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace outbox {

// What a hidden value is replaced with.
inline constexpr std::string_view redaction_mask = "********";

// libpq keywords whose value is a secret (keyword and URI query form):
// password, sslpassword. Case-insensitive (libpq's keywords are lower case;
// a URI may be written by hand).
std::span<const std::string_view> secret_conninfo_keywords() noexcept;
bool is_secret_conninfo_keyword(std::string_view keyword) noexcept;

// librdkafka properties whose value is a secret: sasl.password,
// ssl.key.password, ssl.keystore.password, sasl.oauthbearer.client.secret,
// sasl.oauthbearer.config, ssl.key.pem, ssl_key, ... (the list), and, to stay
// safe with properties librdkafka adds later, every name containing
// "password" or "secret".
std::span<const std::string_view> secret_kafka_properties() noexcept;
bool is_secret_kafka_property(std::string_view name) noexcept;

// `value`, or the mask when `name` is a secret property (an empty value stays
// empty, so "not set" is still visible).
std::string shown_kafka_value(std::string_view name, std::string_view value);

// The conninfo with the value of every secret keyword replaced by the mask,
// in both forms libpq accepts: key=value (quoted values with backslash
// escapes, spaces around '=') and URIs (postgres[ql]://user:secret@host/db?
// password=...&sslpassword=...). Text that does not parse as key=value is
// masked from the point where parsing fails.
std::string redact_conninfo(std::string_view conninfo);

// "@file:/run/secrets/x" -> "/run/secrets/x": a value the shell reads from a
// file (its content, one trailing newline stripped). nullopt for any other
// value (also for an empty path).
std::optional<std::string_view> file_reference(std::string_view value) noexcept;

// A file's content as a secret value: one trailing "\n" or "\r\n" removed
// (what `echo secret > file` leaves), nothing else changed.
std::string secret_from_file_content(std::string_view content);

}  // namespace outbox
