#include "outbox_relay/outbox.hpp"

#include <utility>

namespace outbox {
namespace {

constexpr std::uint32_t oid_jsonb = 3802;
// jsonb_send writes a format version byte before the text (jsonb.c
// jsonb_send: pq_sendint8(&buf, version) with version 1).
constexpr char jsonb_binary_version = 1;

// Kafka accepts only [a-zA-Z0-9._-] in topic names; checking the template's
// literal text up front turns a typo into a start-up error instead of a
// delivery failure on the first row.
bool legal_topic_char(char c) noexcept {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

// The error path of required_text, kept out of line so the per-row path
// inlines to a compare and a copy of the view.
[[gnu::noinline, gnu::cold]] errc column_error(const pgoutput::tuple_column& c, const std::string& name,
                                               mapping_error* err) {
    const errc e = c.kind == pgoutput::column_kind::null              ? errc::null_column
                   : c.kind == pgoutput::column_kind::unchanged_toast ? errc::unchanged_toast_column
                                                                      : errc::bad_value;
    if (err) *err = {e, name};
    return e;
}

// Reads a column that must carry a value ('t' or 'b'). Fills *err with the
// column name on failure (the string copy happens only on the error path).
inline result<std::string_view> required_text(const pgoutput::tuple_column& c, const std::string& name,
                                              mapping_error* err) {
    if (c.kind == pgoutput::column_kind::text || c.kind == pgoutput::column_kind::binary) [[likely]]
        return c.value;
    return column_error(c, name, err);
}

}  // namespace

result<outbox_mapper> outbox_mapper::create(routing_config cfg) {
    outbox_mapper m;
    const std::string& t = cfg.topic_template;
    if (t.empty()) return errc::bad_topic_template;
    std::size_t i = 0;
    while (i < t.size()) {
        if (t[i] == '{') {
            const std::size_t close = t.find_first_of("{}", i + 1);
            // No closing brace, a nested '{', or "{}": literal braces are not
            // supported, so every one of these is a mistake in the template.
            if (close == std::string::npos || t[close] != '}' || close == i + 1)
                return errc::bad_topic_template;
            m.segments_.push_back({true, t.substr(i + 1, close - i - 1)});
            i = close + 1;
        } else {
            const std::size_t open = t.find_first_of("{}", i);
            const std::size_t end = open == std::string::npos ? t.size() : open;
            if (open != std::string::npos && t[open] == '}') return errc::bad_topic_template;
            for (std::size_t k = i; k < end; ++k)
                if (!legal_topic_char(t[k])) return errc::bad_topic_template;
            m.segments_.push_back({false, t.substr(i, end - i)});
            i = end;
        }
    }
    m.segment_index_.assign(m.segments_.size(), -1);
    m.cfg_ = std::move(cfg);
    return m;
}

bool outbox_mapper::is_outbox(const cached_relation& rel) const noexcept {
    return rel.relname == cfg_.table && rel.nspname == cfg_.schema;
}

result<void> outbox_mapper::check_relation(const cached_relation& rel, mapping_error* err) const {
    const outbox_columns& c = cfg_.columns;
    for (const std::string* name : {&c.id, &c.aggregatetype, &c.aggregateid, &c.type, &c.payload}) {
        if (rel.column_index(*name) < 0) {
            if (err) *err = {errc::missing_column, *name};
            return errc::missing_column;
        }
    }
    for (const segment& s : segments_) {
        if (s.placeholder && rel.column_index(s.text) < 0) {
            if (err) *err = {errc::missing_column, s.text};
            return errc::missing_column;
        }
    }
    return {};
}

result<outbox_record> outbox_mapper::map(const cached_relation& rel, const pgoutput::tuple_data& row,
                                         mapping_error* err) const {
    // Resolve column indexes once per relation generation so the per-row path
    // is index arithmetic only. Generation 0 (a relation not built by a
    // relation_cache) is resolved every time rather than trusted.
    if (rel.generation == 0 || rel.generation != resolved_generation_ || rel.relid != resolved_relid_) {
        auto r = check_relation(rel, err);
        if (!r) return r.error();
        const outbox_columns& c = cfg_.columns;
        idx_id_ = rel.column_index(c.id);
        idx_aggregatetype_ = rel.column_index(c.aggregatetype);
        idx_aggregateid_ = rel.column_index(c.aggregateid);
        idx_type_ = rel.column_index(c.type);
        idx_payload_ = rel.column_index(c.payload);
        for (std::size_t i = 0; i < segments_.size(); ++i)
            segment_index_[i] = segments_[i].placeholder ? rel.column_index(segments_[i].text) : -1;
        resolved_generation_ = rel.generation;
        resolved_relid_ = rel.relid;
    }
    // The indexes are only meaningful for a tuple laid out by this relation
    // (relation_cache::check verifies the same; this keeps map() safe alone).
    if (row.columns.size() != rel.columns.size()) {
        if (err) *err = {errc::column_count_mismatch, {}};
        return errc::column_count_mismatch;
    }
    const auto& cols = row.columns;
    const outbox_columns& names = cfg_.columns;
    outbox_record rec;

    auto id = required_text(cols[idx_id_], names.id, err);
    if (!id) return id.error();
    rec.id = *id;
    auto type = required_text(cols[idx_type_], names.type, err);
    if (!type) return type.error();
    rec.type = *type;

    // Key: a NULL aggregateid becomes a null Kafka key (the partitioner then
    // spreads those records; the caller decides whether that is acceptable).
    const pgoutput::tuple_column& key = cols[idx_aggregateid_];
    if (key.kind == pgoutput::column_kind::null) {
        rec.key_null = true;
    } else {
        auto k = required_text(key, names.aggregateid, err);
        if (!k) return k.error();
        rec.key = *k;
    }

    // Value: the payload exactly as the server sent it. In text mode that is
    // the type's output (jsonb normalised by Postgres, json/text verbatim).
    // In binary mode ('b') jsonb_send prefixes a version byte 0x01 that is
    // not part of the JSON: strip it. json, text and varchar send their
    // text bytes unchanged, so 'b' values of other types are used as is.
    const pgoutput::tuple_column& payload = cols[idx_payload_];
    if (payload.kind == pgoutput::column_kind::null) {
        rec.value_null = true;
    } else {
        auto v = required_text(payload, names.payload, err);
        if (!v) return v.error();
        rec.value = *v;
        if (payload.kind == pgoutput::column_kind::binary &&
            rel.columns[static_cast<std::size_t>(idx_payload_)].type_oid == oid_jsonb) {
            if (rec.value.empty() || rec.value.front() != jsonb_binary_version) {
                if (err) *err = {errc::bad_value, names.payload};
                return errc::bad_value;
            }
            rec.value.remove_prefix(1);
        }
    }

    // Topic from the template. A NULL or unchanged-TOAST placeholder column
    // has no text to route by; inventing one would misroute silently.
    std::size_t len = 0;
    for (std::size_t i = 0; i < segments_.size(); ++i) {
        if (!segments_[i].placeholder) {
            len += segments_[i].text.size();
            continue;
        }
        auto v = required_text(cols[segment_index_[i]], segments_[i].text, err);
        if (!v) return v.error();
        len += v->size();
    }
    rec.topic.reserve(len);
    for (std::size_t i = 0; i < segments_.size(); ++i) {
        if (segments_[i].placeholder)
            rec.topic.append(cols[segment_index_[i]].value);
        else
            rec.topic.append(segments_[i].text);
    }
    return rec;
}

}  // namespace outbox
