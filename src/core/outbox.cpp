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
[[gnu::noinline, gnu::cold]] error column_error(const pgoutput::tuple_column& c, const std::string& name) {
    const errc e = c.kind == pgoutput::column_kind::null              ? errc::null_column
                   : c.kind == pgoutput::column_kind::unchanged_toast ? errc::unchanged_toast_column
                                                                      : errc::bad_value;
    return error(e, name);
}

// Reads a column that must carry a value ('t' or 'b'); the error names it.
inline result<std::string_view> required_text(const pgoutput::tuple_column& c, const std::string& name) {
    if (c.kind == pgoutput::column_kind::text || c.kind == pgoutput::column_kind::binary) [[likely]]
        return c.value;
    return column_error(c, name);
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
    for (const segment& s : m.segments_) m.has_placeholder_ = m.has_placeholder_ || s.placeholder;
    // A template without placeholders is one fixed topic: check it whole now
    // (length, "." and "..") so a bad one fails at start-up.
    if (!m.has_placeholder_ && !valid_topic_name(t)) return errc::bad_topic_template;
    m.cfg_ = std::move(cfg);
    return m;
}

bool outbox_mapper::is_outbox(const cached_relation& rel) const noexcept {
    if (cfg_.relid != 0 && rel.relid == cfg_.relid) return true;
    return rel.relname == cfg_.table && rel.nspname == cfg_.schema;
}

result<void> outbox_mapper::check_relation(const cached_relation& rel) const {
    const outbox_columns& c = cfg_.columns;
    for (const std::string* name : {&c.id, &c.aggregatetype, &c.aggregateid, &c.type, &c.payload})
        if (rel.column_index(*name) < 0) return error(errc::missing_column, *name);
    for (const segment& s : segments_)
        if (s.placeholder && rel.column_index(s.text) < 0) return error(errc::missing_column, s.text);
    return {};
}

result<record> outbox_mapper::map(const cached_relation& rel, const pgoutput::tuple_data& row,
                                  record_scratch& scratch) const {
    // Resolve column indexes once per relation generation so the per-row path
    // is index arithmetic only. Generation 0 (a relation not built by a
    // relation_cache) is resolved every time rather than trusted.
    if (rel.generation == 0 || rel.generation != resolved_generation_ || rel.relid != resolved_relid_) {
        auto r = check_relation(rel);
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
    if (row.columns.size() != rel.columns.size()) return errc::column_count_mismatch;
    const auto& cols = row.columns;
    const outbox_columns& names = cfg_.columns;
    record rec;

    auto id = required_text(cols[idx_id_], names.id);
    if (!id) return id.error();
    auto type = required_text(cols[idx_type_], names.type);
    if (!type) return type.error();
    scratch.headers.clear();
    scratch.headers.push_back({header_id, *id});
    scratch.headers.push_back({header_type, *type});

    // Key: a NULL aggregateid becomes a null Kafka key (the partitioner then
    // spreads those records; the caller decides whether that is acceptable).
    const pgoutput::tuple_column& key = cols[idx_aggregateid_];
    if (key.kind == pgoutput::column_kind::null) {
        rec.key_null = true;
    } else {
        auto k = required_text(key, names.aggregateid);
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
        auto v = required_text(payload, names.payload);
        if (!v) return v.error();
        rec.value = *v;
        if (payload.kind == pgoutput::column_kind::binary &&
            rel.columns[static_cast<std::size_t>(idx_payload_)].type_oid == oid_jsonb) {
            if (rec.value.empty() || rec.value.front() != jsonb_binary_version)
                return error(errc::bad_value, names.payload);
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
        auto v = required_text(cols[segment_index_[i]], segments_[i].text);
        if (!v) return v.error();
        len += v->size();
    }
    std::string& topic = scratch.topic;
    topic.clear();
    topic.reserve(len);
    for (std::size_t i = 0; i < segments_.size(); ++i) {
        if (segments_[i].placeholder)
            topic.append(cols[segment_index_[i]].value);
        else
            topic.append(segments_[i].text);
    }
    // A fixed template was checked at create(); a placeholder's value can
    // still make a name Kafka refuses ("bad topic/x"): say so here, naming
    // the template, rather than let the broker reject it later.
    if (has_placeholder_ && !valid_topic_name(topic)) return error(errc::invalid_topic, cfg_.topic_template);
    rec.topic = topic;
    rec.headers = std::span<const header>(scratch.headers.data(), scratch.headers.size());
    return rec;
}

std::pair<std::string, std::string> outbox_mapper::topic_affixes() const {
    std::pair<std::string, std::string> out;
    if (segments_.empty()) return out;
    if (!segments_.front().placeholder) out.first = segments_.front().text;
    if (!has_placeholder_) return out;
    if (!segments_.back().placeholder) out.second = segments_.back().text;
    return out;
}

record outbox_mapper::salvage(const cached_relation& rel, const pgoutput::tuple_data& row,
                             record_scratch& scratch) const {
    record rec;
    scratch.headers.clear();
    scratch.topic.clear();
    auto column = [&](const std::string& name) -> const pgoutput::tuple_column* {
        const int i = rel.column_index(name);
        if (i < 0 || static_cast<std::size_t>(i) >= row.columns.size()) return nullptr;
        const auto& c = row.columns[static_cast<std::size_t>(i)];
        return c.kind == pgoutput::column_kind::text || c.kind == pgoutput::column_kind::binary ? &c : nullptr;
    };
    const outbox_columns& names = cfg_.columns;
    if (const auto* c = column(names.id)) scratch.headers.push_back({header_id, c->value});
    if (const auto* c = column(names.type)) scratch.headers.push_back({header_type, c->value});
    if (const auto* c = column(names.aggregateid))
        rec.key = c->value;
    else
        rec.key_null = true;
    if (const auto* c = column(names.payload)) {
        rec.value = c->value;
        const int i = rel.column_index(names.payload);
        if (c->kind == pgoutput::column_kind::binary && rel.columns[static_cast<std::size_t>(i)].type_oid == oid_jsonb &&
            !rec.value.empty() && rec.value.front() == jsonb_binary_version)
            rec.value.remove_prefix(1);
    } else {
        rec.value_null = true;
    }
    rec.headers = std::span<const header>(scratch.headers.data(), scratch.headers.size());
    return rec;
}

}  // namespace outbox
