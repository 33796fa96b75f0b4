// The one secret list (libpq keywords, librdkafka properties) and redaction.
#include "outbox_relay/secrets.hpp"

#include <doctest/doctest.h>

using namespace outbox;

TEST_SUITE("secrets") {

TEST_CASE("every_libpq_secret_keyword_is_redacted_in_keyword_form") {
    const std::string r = redact_conninfo("host=db user=app password=pw1 sslpassword='key pass' sslmode=verify-full");
    CHECK(r == "host=db user=app password=******** sslpassword=******** sslmode=verify-full");
    CHECK(r.find("pw1") == std::string::npos);
    CHECK(r.find("key pass") == std::string::npos);
    // Case and spacing as libpq accepts them.
    CHECK(redact_conninfo("PASSWORD = x1 host=h") == "PASSWORD = ******** host=h");
}

TEST_CASE("every_libpq_secret_keyword_is_redacted_in_uri_form") {
    const std::string r =
        redact_conninfo("postgresql://app:pw1@db:5432/app?sslpassword=pw2&sslmode=require&password=pw3");
    CHECK(r == "postgresql://app:********@db:5432/app?sslpassword=********&sslmode=require&password=********");
    CHECK(redact_conninfo("postgres://app@db/app") == "postgres://app@db/app");
}

TEST_CASE("unparsable_conninfo_is_hidden_from_the_failure_on") {
    CHECK(redact_conninfo("host=db garbage password=x") == "host=db garbage ********");
}

TEST_CASE("the_lists_hold_the_known_secrets") {
    for (std::string_view k : {"password", "sslpassword"}) CHECK(is_secret_conninfo_keyword(k));
    for (std::string_view k : {"host", "user", "sslkey", "sslrootcert", "passfile"})
        CHECK_FALSE(is_secret_conninfo_keyword(k));
    for (std::string_view p : {"sasl.password", "ssl.key.password", "ssl.keystore.password",
                               "sasl.oauthbearer.client.secret", "sasl.oauthbearer.config", "ssl.key.pem", "ssl_key"})
        CHECK(is_secret_kafka_property(p));
    // A property librdkafka adds later is caught by its name.
    CHECK(is_secret_kafka_property("ssl.truststore.password"));
    CHECK(is_secret_kafka_property("sasl.future.secret.thing"));
    for (std::string_view p : {"linger.ms", "security.protocol", "sasl.username", "ssl.ca.location"})
        CHECK_FALSE(is_secret_kafka_property(p));
    CHECK(secret_kafka_properties().size() >= 7);
    CHECK(secret_conninfo_keywords().size() == 2);
}

TEST_CASE("shown_kafka_value_masks_secrets_only") {
    CHECK(shown_kafka_value("sasl.password", "hunter2") == std::string(redaction_mask));
    CHECK(shown_kafka_value("sasl.password", "") == "");
    CHECK(shown_kafka_value("linger.ms", "5") == "5");
}

TEST_CASE("file_references") {
    CHECK(file_reference("@file:/run/secrets/x") == std::optional<std::string_view>("/run/secrets/x"));
    CHECK_FALSE(file_reference("@file:").has_value());
    CHECK_FALSE(file_reference("plain").has_value());
    CHECK_FALSE(file_reference("file:/x").has_value());
    CHECK(secret_from_file_content("s3cret\n") == "s3cret");
    CHECK(secret_from_file_content("s3cret\r\n") == "s3cret");
    CHECK(secret_from_file_content("s3cret") == "s3cret");
    CHECK(secret_from_file_content(" two words \n\n") == " two words \n");
}

}  // TEST_SUITE
