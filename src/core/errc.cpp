#include "outbox_relay/errc.hpp"

namespace outbox {
namespace {

class core_category_impl final : public boost::system::error_category {
public:
    const char* name() const noexcept override { return "outbox"; }
    std::string message(int ev) const override {
        switch (static_cast<errc>(ev)) {
            case errc::ok: return "ok";
            case errc::truncated: return "input truncated inside a field";
            case errc::trailing_bytes: return "unexpected bytes after the end of a message";
            case errc::unknown_tag: return "unknown message tag";
            case errc::tag_not_in_version: return "message tag not valid for the negotiated protocol version";
            case errc::bad_string: return "string without NUL terminator";
            case errc::bad_value: return "field value not allowed by the protocol";
            case errc::unknown_relation: return "tuple for a relation id never announced by a Relation message";
            case errc::column_count_mismatch: return "tuple column count differs from its Relation message";
            case errc::bad_lsn_text: return "malformed LSN (expected X/X in hex)";
            case errc::bad_config: return "invalid configuration";
            case errc::missing_column: return "mapped column missing from the outbox relation";
            case errc::null_column: return "mapped column is NULL";
            case errc::unchanged_toast_column: return "mapped column sent as unchanged TOAST";
            case errc::bad_topic_template: return "invalid topic template";
            case errc::lsn_went_backwards: return "LSN went backwards";
        }
        return "unknown outbox error";
    }
};

}  // namespace

const boost::system::error_category& core_category() noexcept {
    static const core_category_impl instance;
    return instance;
}

}  // namespace outbox
