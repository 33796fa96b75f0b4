// main() runs everything inside run_guarded: an exception escaping a loop
// handler must end the process with exit code 1 and a log line, never with
// std::terminate (issue 8, defect 6).
#include "outbox_relay/io/relay.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <doctest/doctest.h>

#include <stdexcept>
#include <system_error>

TEST_CASE("run_guarded/returns_the_body_exit_code") {
    CHECK(outbox::io::run_guarded([] { return 0; }) == 0);
    CHECK(outbox::io::run_guarded([] { return 21; }) == 21);
}

TEST_CASE("run_guarded/exception_from_a_loop_handler_is_exit_1") {
    // The way main runs the loop: a handler throws inside run_one().
    const int code = outbox::io::run_guarded([] {
        boost::asio::io_context ioc;
        boost::asio::post(ioc, [] { throw std::system_error(EMFILE, std::generic_category(), "pipe2"); });
        while (ioc.run_one() > 0) {
        }
        return 0;
    });
    CHECK(code == 1);
    CHECK(outbox::io::run_guarded([]() -> int { throw 42; }) == 1);
}
