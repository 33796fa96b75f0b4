// Golden frames captured once from a real PostgreSQL 15 by
// tests/fixtures/capture/capture.sh; the SQL that produced each fixture is the
// .sql file of the same name under tests/fixtures/pgoutput/. Every frame of
// every fixture is decoded, and the decoded content is checked against the
// values written by that SQL.
#include "outbox_relay/pgoutput.hpp"
#include "outbox_relay/relation_cache.hpp"
#include "outbox_relay/walsender.hpp"

#include "../support/fixture_reader.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

using namespace outbox;
using namespace outbox::pgoutput;

namespace {

// One decoded 'w' frame. The spans inside `msg` die with the next decode, so
// the arrays they pointed to are copied next to it; string views still point
// into the capture's frames, which outlive the events.
struct event {
    walsender::xlog_data hdr;
    char tag = 0;
    message_variant msg;
    std::vector<tuple_column> old_cols, new_cols;
    std::vector<relation_column> rel_cols;
    std::vector<std::uint32_t> relids;

    template <class T>
    const T& as() const {
        REQUIRE(std::holds_alternative<T>(msg));
        return std::get<T>(msg);
    }
    bool is(char t) const { return tag == t; }
};

struct capture {
    std::vector<std::string> frames;
    std::vector<event> events;
    std::size_t keepalives = 0;

    std::vector<const event*> with_tag(char t) const {
        std::vector<const event*> out;
        for (const auto& e : events)
            if (e.tag == t) out.push_back(&e);
        return out;
    }
    std::string tags() const {
        std::string s;
        for (const auto& e : events) s.push_back(e.tag);
        return s;
    }
};

std::string fixture_path(const std::string& name) {
    return std::string(OUTBOX_FIXTURES_DIR) + "/pgoutput/" + name + ".bin";
}

void load(const std::string& name, decoder_options opts, capture& c) {
    auto frames = test::read_capture(fixture_path(name));
    REQUIRE_MESSAGE(frames.has_value(), "cannot read fixture " << fixture_path(name));
    c.frames = std::move(*frames);
    REQUIRE_FALSE(c.frames.empty());
    decoder d(opts);
    for (std::size_t i = 0; i < c.frames.size(); ++i) {
        CAPTURE(i);
        auto cm = walsender::parse_copy_data(c.frames[i]);
        REQUIRE(cm.has_value());
        if (std::holds_alternative<walsender::keepalive>(*cm)) {
            ++c.keepalives;
            continue;
        }
        event e;
        e.hdr = std::get<walsender::xlog_data>(*cm);
        auto m = d.decode(e.hdr.payload);
        if (m.has_error()) FAIL("frame " << i << ": " << m.error().describe());
        e.tag = e.hdr.payload[0];
        e.msg = *m;
        std::visit(
            [&](auto& v) {
                using T = std::decay_t<decltype(v)>;
                auto own = [](std::vector<tuple_column>& dst, tuple_data& t) {
                    dst.assign(t.columns.begin(), t.columns.end());
                    t.columns = std::span<const tuple_column>(dst.data(), dst.size());
                };
                if constexpr (std::is_same_v<T, insert>) own(e.new_cols, v.new_tuple);
                if constexpr (std::is_same_v<T, update>) {
                    own(e.old_cols, v.old_tuple);
                    own(e.new_cols, v.new_tuple);
                }
                if constexpr (std::is_same_v<T, delete_>) own(e.old_cols, v.old_tuple);
                if constexpr (std::is_same_v<T, relation>) {
                    e.rel_cols.assign(v.columns.begin(), v.columns.end());
                    v.columns = std::span<const relation_column>(e.rel_cols.data(), e.rel_cols.size());
                }
                if constexpr (std::is_same_v<T, pgoutput::truncate>) {
                    e.relids.assign(v.relids.begin(), v.relids.end());
                    v.relids = std::span<const std::uint32_t>(e.relids.data(), e.relids.size());
                }
            },
            e.msg);
        c.events.push_back(std::move(e));
    }
    // The spans re-pointed above referenced vectors inside events that were
    // then moved; vectors keep their heap buffer when moved, so they still hold.
}

std::vector<std::string_view> values(const std::vector<tuple_column>& cols) {
    std::vector<std::string_view> v;
    for (const auto& c : cols) v.push_back(c.value);
    return v;
}

std::string kinds(const std::vector<tuple_column>& cols) {
    std::string s;
    for (const auto& c : cols) s.push_back(static_cast<char>(c.kind));
    return s;
}

std::vector<std::string_view> col_names(const event& e) {
    std::vector<std::string_view> v;
    for (const auto& c : e.rel_cols) v.push_back(c.name);
    return v;
}

const std::vector<std::string_view> golden_outbox_columns = {"id",      "aggregate_type", "aggregate_id", "event_type",
                                                      "payload", "headers",        "created_at"};

// Unix time 2024-05-01 12:00:00 UTC, as µs since the Postgres epoch.
constexpr std::int64_t ts_2024_05_01_12 = (1714564800LL - 946684800LL) * 1'000'000;

}  // namespace

TEST_CASE("golden_every_fixture_decodes_with_consistent_lsns") {
    const std::pair<const char*, decoder_options> all[] = {
        {"v1_multirow", {1, false}},   {"v1_nulls_unicode", {1, false}}, {"v1_big_jsonb", {1, false}},
        {"v1_add_column", {1, false}}, {"v1_messages", {1, false}},      {"v1_truncate", {1, false}},
        {"v1_replica_full", {1, false}}, {"v1_binary", {1, false}},      {"v1_type_origin", {1, false}},
        {"v2_streaming", {2, false}},  {"v3_two_phase", {3, false}},     {"bench_outbox_inserts", {1, false}}};
    for (const auto& [name, opts] : all) {
        CAPTURE(name);
        capture c;
        load(name, opts, c);
        CHECK(c.keepalives >= 1u);  // the capture stops on a keepalive past its end position
        const event* open_begin = nullptr;
        for (const auto& e : c.events) {
            // PROTOCOL.md §1.3: Relation and Type are written with last_write=false,
            // so their 'w' header carries 0; dataStart always equals walEnd.
            CHECK(e.hdr.data_start == e.hdr.wal_end);
            if (e.is('R') || e.is('Y')) CHECK(e.hdr.data_start.is_zero());
            if (e.is('B')) open_begin = &e;
            if (e.is('C')) {
                REQUIRE(open_begin != nullptr);
                const auto& cm = e.as<commit>();
                // Begin.final_lsn is the commit record's LSN; the relay confirms end_lsn.
                CHECK(cm.commit_lsn == open_begin->as<begin>().final_lsn);
                CHECK(cm.end_lsn > cm.commit_lsn);
                CHECK(e.hdr.data_start == cm.end_lsn);
                CHECK(cm.flags == 0);
                open_begin = nullptr;
            }
        }
        CHECK(open_begin == nullptr);
    }
}

TEST_CASE("golden_multirow_transactions") {
    capture c;
    load("v1_multirow", {1, false}, c);
    CHECK(c.tags() == "BRIIICBIC");
    const auto& rel = c.events[1];
    const auto& r = rel.as<relation>();
    CHECK(r.nspname == "public");
    CHECK(r.relname == "outbox");
    CHECK(r.replica_identity == 'd');
    CHECK(col_names(rel) == golden_outbox_columns);
    std::vector<std::uint32_t> oids;
    for (const auto& col : rel.rel_cols) oids.push_back(col.type_oid);
    CHECK(oids == std::vector<std::uint32_t>{20, 25, 25, 25, 3802, 3802, 1184});  // int8 text jsonb timestamptz
    CHECK(rel.rel_cols[0].flags == 1);  // primary key = replica identity
    CHECK(rel.rel_cols[1].flags == 0);

    auto ins = c.with_tag('I');
    REQUIRE(ins.size() == 4u);
    CHECK(values(ins[0]->new_cols) == std::vector<std::string_view>{"1", "order", "o-1", "created", R"({"n": 1})",
                                                                      R"({"h": "a"})", "2024-05-01 12:00:00+00"});
    CHECK(values(ins[1]->new_cols)[3] == "paid");
    CHECK(values(ins[2]->new_cols)[2] == "o-2");
    CHECK(values(ins[3]->new_cols) == std::vector<std::string_view>{"4", "user", "u-9", "renamed", R"({"n": 4})",
                                                                      R"({"h": "d"})", "2024-05-01 12:00:03+00"});
    for (const auto* e : ins) {
        CHECK(e->as<insert>().relid == r.relid);
        CHECK(kinds(e->new_cols) == "ttttttt");
        CHECK_FALSE(e->as<insert>().xid.has_value());
    }
    auto begins = c.with_tag('B');
    REQUIRE(begins.size() == 2u);
    CHECK(begins[1]->as<begin>().xid > begins[0]->as<begin>().xid);
}

TEST_CASE("golden_nulls_and_unicode") {
    capture c;
    load("v1_nulls_unicode", {1, false}, c);
    auto ins = c.with_tag('I');
    REQUIRE(ins.size() == 2u);
    CHECK(kinds(ins[0]->new_cols) == "ttttnnt");
    CHECK(ins[0]->new_cols[4].value.empty());
    CHECK(values(ins[1]->new_cols) ==
          std::vector<std::string_view>{"11", "Bestellung", "größe-ß-日本語-🚀", "créé", R"({"msg": "héllo ✓"})", "",
                                        "2024-05-01 12:00:00+00"});
    CHECK(kinds(ins[1]->new_cols) == "tttttnt");
}

TEST_CASE("golden_one_megabyte_jsonb") {
    capture c;
    load("v1_big_jsonb", {1, false}, c);
    auto ins = c.with_tag('I');
    REQUIRE(ins.size() == 1u);
    std::string_view v = ins[0]->new_cols[4].value;
    // {"blob": "<32768 md5 hex digests>"}: 10 + 32768*32 + 2 bytes.
    CHECK(v.size() == 10u + 32768u * 32u + 2u);
    CHECK(v.substr(0, 10) == R"({"blob": ")");
    CHECK(v.substr(10, 32) == "c4ca4238a0b923820dcc509a6f75849b");  // md5('1')
    CHECK(v.substr(42, 32) == "c81e728d9d4c2f636f067f89cc14862c");  // md5('2')
    CHECK(v.substr(v.size() - 2) == R"("})");
    CHECK(values(ins[0]->new_cols)[0] == "20");
}

TEST_CASE("golden_column_added_mid_stream") {
    capture c;
    load("v1_add_column", {1, false}, c);
    CHECK(c.tags() == "BRICBRIC");
    auto rels = c.with_tag('R');
    auto ins = c.with_tag('I');
    REQUIRE(rels.size() == 2u);
    REQUIRE(ins.size() == 2u);
    CHECK(rels[0]->as<relation>().relid == rels[1]->as<relation>().relid);
    CHECK(rels[0]->rel_cols.size() == 7u);
    REQUIRE(rels[1]->rel_cols.size() == 8u);
    CHECK(rels[1]->rel_cols[7].name == "trace_id");

    relation_cache cache;
    cache.apply(rels[0]->as<relation>());
    const auto relid = ins[0]->as<insert>().relid;
    CHECK(cache.check(relid, ins[0]->as<insert>().new_tuple).has_value());
    // Read against the stale 7-column Relation, the second row does not fit...
    auto stale = cache.check(relid, ins[1]->as<insert>().new_tuple);
    REQUIRE(stale.has_error());
    CHECK(stale.error() == errc::column_count_mismatch);
    // ...and after the resent Relation replaces it, it does.
    cache.apply(rels[1]->as<relation>());
    auto fresh = cache.check(relid, ins[1]->as<insert>().new_tuple);
    REQUIRE(fresh.has_value());
    int idx = (*fresh)->column_index("trace_id");
    REQUIRE(idx == 7);
    CHECK(ins[1]->new_cols[static_cast<std::size_t>(idx)].value == "trace-31");
}

TEST_CASE("golden_logical_messages") {
    capture c;
    load("v1_messages", {1, false}, c);
    // Transactional message inside its transaction, the non-transactional one
    // alone, and a transaction holding only a message (it still gets a Begin).
    CHECK(c.tags() == "BRIMCMBMC");
    auto msgs = c.with_tag('M');
    REQUIRE(msgs.size() == 3u);
    const auto& t = msgs[0]->as<message>();
    CHECK(t.transactional());
    CHECK(t.prefix == "outbox");
    CHECK(t.content == "txn-message");
    CHECK(t.message_lsn == msgs[0]->hdr.data_start);
    const auto& n = msgs[1]->as<message>();
    CHECK_FALSE(n.transactional());
    CHECK(n.prefix == "audit");
    CHECK(n.content == "non-txn-message");
    const auto& b = msgs[2]->as<message>();
    CHECK(b.transactional());
    CHECK(b.prefix == "only");
    CHECK(b.content == "bytes-ä");
    // The message-only transaction: its commit LSN is at or after the message.
    CHECK(c.events.back().as<commit>().commit_lsn >= b.message_lsn);
}

TEST_CASE("golden_truncate") {
    capture c;
    load("v1_truncate", {1, false}, c);
    CHECK(c.tags() == "BRICBRTCBRRTC");
    auto truncs = c.with_tag('T');
    REQUIRE(truncs.size() == 2u);
    auto rels = c.with_tag('R');
    std::uint32_t outbox_id = rels[0]->as<relation>().relid;
    std::uint32_t archive_id = rels.back()->as<relation>().relid;
    CHECK(rels.back()->as<relation>().relname == "outbox_archive");
    CHECK(truncs[0]->as<pgoutput::truncate>().options == 0);
    CHECK(truncs[0]->relids == std::vector<std::uint32_t>{outbox_id});
    CHECK(truncs[1]->as<pgoutput::truncate>().options == 2);  // RESTART IDENTITY
    std::set<std::uint32_t> both(truncs[1]->relids.begin(), truncs[1]->relids.end());
    CHECK(both == std::set<std::uint32_t>{outbox_id, archive_id});
}

TEST_CASE("golden_update_delete_default_and_full_identity") {
    capture c;
    load("v1_replica_full", {1, false}, c);
    CHECK(c.tags() == "BRICBUCBUCBDCBICBRUCBDC");
    auto ups = c.with_tag('U');
    auto dels = c.with_tag('D');
    REQUIRE(ups.size() == 3u);
    REQUIRE(dels.size() == 2u);
    // Non-key update: no old tuple; the untouched out-of-line headers come as 'u'.
    CHECK(ups[0]->as<update>().old_kind == 0);
    CHECK(kinds(ups[0]->new_cols) == "ttttt" "ut");
    CHECK(values(ups[0]->new_cols)[3] == "paid");
    // Key change: old key ('K') with only the key column set.
    CHECK(ups[1]->as<update>().old_kind == 'K');
    CHECK(kinds(ups[1]->old_cols) == "tnnnnnn");
    CHECK(values(ups[1]->old_cols)[0] == "60");
    CHECK(values(ups[1]->new_cols)[0] == "61");
    CHECK(dels[0]->as<delete_>().old_kind == 'K');
    CHECK(values(dels[0]->old_cols)[0] == "61");
    // After REPLICA IDENTITY FULL: Relation resent with 'f' and all columns in the key.
    auto rels = c.with_tag('R');
    REQUIRE(rels.size() == 2u);
    CHECK(rels[1]->as<relation>().replica_identity == 'f');
    for (const auto& col : rels[1]->rel_cols) CHECK(col.flags == 1);
    CHECK(ups[2]->as<update>().old_kind == 'O');
    CHECK(values(ups[2]->old_cols)[3] == "created");
    CHECK(values(ups[2]->new_cols)[3] == "shipped");
    CHECK(kinds(ups[2]->old_cols) == "ttttt" "nt");
    CHECK(dels[1]->as<delete_>().old_kind == 'O');
    CHECK(values(dels[1]->old_cols)[3] == "shipped");
    // The insert carried the full 4000-character headers value.
    auto ins = c.with_tag('I');
    CHECK(ins[0]->new_cols[5].value.size() == std::string_view(R"({"h": ""})").size() + 4000);
}

TEST_CASE("golden_binary_mode_values") {
    capture c;
    load("v1_binary", {1, false}, c);
    auto ins = c.with_tag('I');
    REQUIRE(ins.size() == 1u);
    const auto& cols = ins[0]->new_cols;
    CHECK(kinds(cols) == "bbbbbbn");
    CHECK(cols[0].value == std::string("\x01\x00\x00\x00\x00\x00\x00\x01", 8));  // int8 72057594037927937
    CHECK(cols[1].value == std::string("\xFF\xFE", 2));                          // int2 -2
    CHECK(cols[2].value == std::string("\x01", 1));                              // bool true
    CHECK(cols[3].value == "bin");                                                // text
    CHECK(cols[4].value == std::string("\x01") + R"({"k": 7})");                 // jsonb: version 1 + text
    // timestamptz: Int64 µs since 2000-01-01 00:00:00 UTC = 1.5 s.
    CHECK(cols[5].value == std::string("\x00\x00\x00\x00\x00\x16\xE3\x60", 8));
}

TEST_CASE("golden_type_and_origin") {
    capture c;
    load("v1_type_origin", {1, false}, c);
    CHECK(c.tags() == "BYRICBOIC");
    const auto& y = c.with_tag('Y')[0]->as<type>();
    CHECK(y.nspname == "public");
    CHECK(y.typname == "outbox_status");
    const auto* rel = c.with_tag('R')[0];
    CHECK(rel->rel_cols[1].name == "status");
    CHECK(rel->rel_cols[1].type_oid == y.type_oid);
    auto ins = c.with_tag('I');
    CHECK(values(ins[0]->new_cols) == std::vector<std::string_view>{"80", "new", "plain"});
    CHECK(values(ins[1]->new_cols) == std::vector<std::string_view>{"81", "sent", "from origin"});
    const auto& o = c.with_tag('O')[0]->as<origin>();
    CHECK(o.name == "upstream_a");
    CHECK(o.commit_lsn == lsn{0xABCDEF});  // pg_replication_origin_xact_setup('0/ABCDEF', ...)
    // The origin's commit timestamp replaces the local one in Begin.
    auto begins = c.with_tag('B');
    CHECK(begins[1]->as<begin>().commit_ts == ts_2024_05_01_12);
    // Begin followed by Origin is written with last_write=false: header 0.
    CHECK(begins[1]->hdr.data_start.is_zero());
}

TEST_CASE("golden_v2_streamed_transactions") {
    capture c;
    load("v2_streaming", {2, false}, c);
    // Replay the stream the way a consumer must: buffer changes per xid,
    // keep them on Stream Commit, drop the (sub)transaction on Stream Abort.
    std::map<std::uint32_t, std::vector<std::pair<long, std::string>>> pending;  // xid -> (id, event_type)
    std::map<std::uint32_t, std::uint32_t> top_of;                               // change xid -> stream xid
    std::set<long> committed;
    std::set<std::string> committed_types;
    std::uint32_t current = 0;
    bool in_stream = false;
    int full_aborts = 0, sub_aborts = 0, first_segments = 0;
    for (const auto& e : c.events) {
        switch (e.tag) {
            case 'S':
                REQUIRE_FALSE(in_stream);
                in_stream = true;
                current = e.as<stream_start>().xid;
                first_segments += e.as<stream_start>().first_segment;
                break;
            case 'E':
                REQUIRE(in_stream);
                in_stream = false;
                break;
            case 'R':
                REQUIRE(e.as<relation>().xid.has_value());
                CHECK(*e.as<relation>().xid == current);
                break;
            case 'I': {
                REQUIRE(in_stream);
                const auto& i = e.as<insert>();
                REQUIRE(i.xid.has_value());  // every change inside a stream has the xid prefix
                top_of[*i.xid] = current;
                pending[*i.xid].emplace_back(std::stol(std::string(e.new_cols[0].value)),
                                             std::string(e.new_cols[3].value));
                break;
            }
            case 'A': {
                const auto& a = e.as<stream_abort>();
                CHECK_FALSE(a.abort_lsn.has_value());
                if (a.xid == a.subxid) {
                    ++full_aborts;
                    for (auto it = pending.begin(); it != pending.end();)
                        it = top_of[it->first] == a.xid ? pending.erase(it) : std::next(it);
                } else {
                    ++sub_aborts;
                    CHECK(top_of[a.subxid] == a.xid);
                    for (const auto& [id, type] : pending[a.subxid]) CHECK(type == "dropped");
                    pending.erase(a.subxid);
                }
                break;
            }
            case 'c': {
                const auto& sc = e.as<stream_commit>();
                CHECK(sc.end_lsn > sc.commit_lsn);
                CHECK(e.hdr.data_start == sc.end_lsn);
                for (auto it = pending.begin(); it != pending.end();) {
                    if (top_of[it->first] != sc.xid) {
                        ++it;
                        continue;
                    }
                    for (const auto& [id, type] : it->second) {
                        committed.insert(id);
                        committed_types.insert(type);
                    }
                    it = pending.erase(it);
                }
                break;
            }
            default:
                FAIL("unexpected tag in streaming fixture: " << e.tag);
        }
    }
    CHECK_FALSE(in_stream);
    CHECK(pending.empty());
    CHECK(first_segments == 3);  // three large transactions, each streamed
    CHECK(full_aborts == 1);     // ROLLBACK of the 800-row transaction
    CHECK(sub_aborts == 1);      // ROLLBACK TO SAVEPOINT s1
    std::set<long> expect;
    for (long i = 1; i <= 800; ++i) expect.insert(i);
    for (long i = 200001; i <= 200600; ++i) expect.insert(i);
    CHECK(committed == expect);
    CHECK(committed_types == std::set<std::string>{"created", "kept"});
    CHECK(c.with_tag('S').size() > 3u);  // at least one transaction came in several chunks
}

TEST_CASE("golden_v3_two_phase") {
    capture c;
    load("v3_two_phase", {3, false}, c);
    std::map<std::string, const event*> begin_prep, prep, commit_prep, rollback_prep, stream_prep;
    for (const auto& e : c.events) {
        if (e.is('b')) begin_prep[std::string(e.as<begin_prepare>().gid)] = &e;
        if (e.is('P')) prep[std::string(e.as<prepare>().gid)] = &e;
        if (e.is('p')) stream_prep[std::string(e.as<stream_prepare>().gid)] = &e;
        if (e.is('K')) commit_prep[std::string(e.as<commit_prepared>().gid)] = &e;
        if (e.is('r')) rollback_prep[std::string(e.as<rollback_prepared>().gid)] = &e;
    }
    REQUIRE(begin_prep.size() == 2u);
    REQUIRE(prep.size() == 2u);
    for (const char* gid : {"gid-commit", "gid-rollback"}) {
        CAPTURE(gid);
        REQUIRE(begin_prep.count(gid) == 1u);
        REQUIRE(prep.count(gid) == 1u);
        const auto& b = begin_prep[gid]->as<begin_prepare>();
        const auto& p = prep[gid]->as<prepare>();
        CHECK(b.prepare_lsn == p.prepare_lsn);
        CHECK(b.end_lsn == p.end_lsn);
        CHECK(b.xid == p.xid);
        CHECK(p.end_lsn > p.prepare_lsn);
    }
    REQUIRE(commit_prep.count("gid-commit") == 1u);
    const auto& k = commit_prep["gid-commit"]->as<commit_prepared>();
    CHECK(k.xid == prep["gid-commit"]->as<prepare>().xid);
    CHECK(k.commit_lsn >= prep["gid-commit"]->as<prepare>().end_lsn);
    CHECK(k.end_lsn > k.commit_lsn);
    REQUIRE(rollback_prep.count("gid-rollback") == 1u);
    const auto& r = rollback_prep["gid-rollback"]->as<rollback_prepared>();
    CHECK(r.prepare_end_lsn == prep["gid-rollback"]->as<prepare>().end_lsn);
    CHECK(r.rollback_end_lsn > r.prepare_end_lsn);
    CHECK(r.xid == prep["gid-rollback"]->as<prepare>().xid);
    // The big prepared transaction was streamed, then Stream Prepare, then COMMIT PREPARED.
    REQUIRE(stream_prep.count("gid-streamed") == 1u);
    REQUIRE(commit_prep.count("gid-streamed") == 1u);
    const auto& sp = stream_prep["gid-streamed"]->as<stream_prepare>();
    CHECK(commit_prep["gid-streamed"]->as<commit_prepared>().xid == sp.xid);
    std::set<long> streamed_ids;
    for (const auto& e : c.events)
        if (e.is('I') && e.as<insert>().xid == sp.xid) streamed_ids.insert(std::stol(std::string(e.new_cols[0].value)));
    CHECK(streamed_ids.size() == 800u);
    CHECK(*streamed_ids.begin() == 1000);
    CHECK(*streamed_ids.rbegin() == 1799);
    // The inserts of the two small prepared transactions, outside any stream.
    std::set<std::string> plain;
    for (const auto& e : c.events)
        if (e.is('I') && !e.as<insert>().xid) plain.insert(std::string(e.new_cols[0].value));
    CHECK(plain == std::set<std::string>{"90", "91"});
}

TEST_CASE("golden_two_phase_stream_rejected_by_v2_decoder") {
    auto frames = test::read_capture(fixture_path("v3_two_phase"));
    REQUIRE(frames.has_value());
    decoder d({2, false});
    bool rejected = false;
    for (const auto& f : *frames) {
        auto cm = walsender::parse_copy_data(f);
        REQUIRE(cm.has_value());
        auto* x = std::get_if<walsender::xlog_data>(&*cm);
        if (x == nullptr) continue;
        auto m = d.decode(x->payload);
        if (m.has_error()) {
            CHECK(m.error() == errc::tag_not_in_version);
            CHECK(m.error().tag == 'b');
            rejected = true;
            break;
        }
    }
    CHECK(rejected);
}

TEST_CASE("golden_bench_stream_shape") {
    capture c;
    load("bench_outbox_inserts", {1, false}, c);
    auto ins = c.with_tag('I');
    CHECK(ins.size() == 1000u);
    CHECK(c.with_tag('B').size() == 50u);
    CHECK(c.with_tag('C').size() == 50u);
    for (const auto* e : ins) {
        CHECK(e->new_cols.size() == 7u);
        CHECK(e->new_cols[4].value.size() > 250u);  // the ~300-byte jsonb payload
    }
    CHECK(values(ins[0]->new_cols)[2] == "order-1");
}
