#pragma once
// Error codes of the pure core. Pure code returns boost::system::result<T>
// carrying one of these; it never throws and never logs.
#include <boost/system/error_code.hpp>
#include <boost/system/result.hpp>

#include <string>
#include <system_error>

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
    // checkpoint
    lsn_went_backwards,
};

const boost::system::error_category& core_category() noexcept;

inline boost::system::error_code make_error_code(errc e) noexcept {
    return {static_cast<int>(e), core_category()};
}

template <class T>
using result = boost::system::result<T, boost::system::error_code>;

}  // namespace outbox

namespace boost::system {
template <>
struct is_error_code_enum<outbox::errc> : std::true_type {};
}  // namespace boost::system
