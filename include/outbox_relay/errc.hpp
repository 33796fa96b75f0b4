#pragma once
// The one error idiom of the pure core: a fallible function returns
// outbox::result<T>, which holds either the value or an outbox::error that
// carries the detail of what went wrong (code, and where: protocol field and
// byte offset, mapped column, or configuration key and source). Pure code
// never throws, never logs and has no out-parameters for errors.
#include <boost/system/result.hpp>

#include <cstddef>
#include <string>
#include <string_view>

namespace outbox {

enum class errc : int {
    ok = 0,
    // byte_reader / framing
    truncated = 1,             // input ended inside a field
    trailing_bytes,            // bytes left over after a complete message
    unknown_tag,               // first byte names no known message
    tag_not_in_version,        // tag is valid only in a later protocol version
    bad_string,                // NUL terminator missing
    bad_value,                 // a field holds a value the protocol does not allow
    // pgoutput semantics
    unknown_relation,          // tuple for a relid that no Relation message announced
    column_count_mismatch,     // TupleData ncols differs from the Relation's
    // lsn
    bad_lsn_text,              // not of the form X/X (hex)
    // config
    bad_config,
    // outbox mapping
    missing_column,            // a mapped column is absent from the relation
    null_column,               // a mapped column that must be set is NULL
    unchanged_toast_column,    // a mapped column came as 'u' (unchanged TOAST)
    bad_topic_template,
    invalid_topic,             // a routed topic name Kafka would refuse
    bad_placement,             // an additional-field placement that cannot be built
    bad_message,               // an outbox message that is not a JSON object of the fields
    // checkpoint
    lsn_went_backwards,
};

// One line describing `e`, e.g. "input truncated inside a field".
std::string_view errc_message(errc e) noexcept;

// What went wrong, and where. Only the members that apply are set:
//   decoding   tag, field (protocol field name), offset (bytes into the message)
//   mapping    field (the column, or the topic template)
//   config     field (the option key, or the unknown name as given), source
//              ("--slot", "OUTBOX_RELAY_SLOT", "relay.json:slot"), message
//              (what is wrong with the value)
// Errors are built on failure paths only, so owning the strings costs the
// success path nothing.
struct error {
    errc code = errc::ok;
    std::string field;
    std::size_t offset = 0;
    char tag = 0;
    std::string source;
    std::string message;

    error() = default;
    error(errc c) noexcept : code(c) {}  // NOLINT(google-explicit-constructor): `return errc::x;` reads best
    error(errc c, std::string_view f, std::size_t off = 0, char t = 0) : code(c), field(f), offset(off), tag(t) {}

    // errc_message(code), or `message` when set, plus the location when known:
    // "input truncated inside a field (tag 'I', field relid, offset 5)".
    std::string describe() const;

    friend bool operator==(const error& e, errc c) noexcept { return e.code == c; }
};

template <class T>
using result = boost::system::result<T, error>;

// boost::system::result<T, E>::value() on an error calls this (found by ADL).
// Pure code never calls value() on an error; reaching it is a programming
// error, so it aborts with the description instead of throwing.
[[noreturn]] void throw_exception_from_error(const error& e, const boost::source_location& loc);

}  // namespace outbox
