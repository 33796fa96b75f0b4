// doctest main of the component_tests binary (I/O modules against librdkafka's
// in-process mock cluster; no real broker, no Postgres).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
