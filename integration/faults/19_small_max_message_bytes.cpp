// Scenario 19: a topic whose max.message.bytes (10 kB) is far below the
// producer's batch size (librdkafka's default 1 MB). Every record fits on its
// own, but a batch of them does not, and librdkafka 2.0.2 does not split a
// refused batch: the broker answers MESSAGE_TOO_LARGE for all of it. The
// relay must shrink its batches rather than call small records too large:
// every record arrives exactly once, nothing is dead-lettered, the relay
// stays up. (Fault 16 used to pass only because it set batch.size itself.)
#include "faults_support.hpp"

#include <doctest/doctest.h>

using namespace outbox::it::faults;

TEST_CASE("19_small_max_message_bytes") {
    topic_cleanup topics;
    scenario sc("19_small_max_message_bytes");
    topics.prefix = sc.prefix();
    // One aggregate type, so every row goes to this one topic.
    create_topic_with_config(env().brokers, sc.topic("type0"), 3, {{"max.message.bytes", "10000"}});
    auto& relay = sc.start_relay();
    sc.wait_streaming(relay);

    outbox_writer w(env().pg, sc.table(), "mb", 20, 1);
    for (int i = 0; i < 40; ++i) w.write_txn(100);  // ~300 bytes each: batches of kilobytes
    auto rep = sc.check(180s, /*allow_duplicates=*/false, w.rows());
    const std::string log = relay.log_text();
    const auto shrinks = [&] {
        std::size_t n = 0;
        for (auto at = log.find("event=batch_too_large"); at != std::string::npos;
             at = log.find("event=batch_too_large", at + 1))
            ++n;
        return n;
    }();
    INFO("relay log tail:\n" << relay.log_text(4000));
    for (const auto& s : rep.samples) MESSAGE("checker: " << s);
    MESSAGE("19_small_max_message_bytes rows=" << w.rows() << " batch_shrinks=" << shrinks << " " << rep.summary());
    CHECK(shrinks >= 1);  // the mechanism ran: a batch was refused and made smaller
    CHECK(log.find("event=dead_letter") == std::string::npos);
    CHECK(log.find("event=fatal") == std::string::npos);
    CHECK(relay.running());
    CHECK(exactly_once(rep));
    CHECK(rep.missing == 0);
    CHECK(rep.duplicated == 0);
}
