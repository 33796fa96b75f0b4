// doctest main shared by every integration scenario executable (linked in through
// the outbox_it_harness library, so a scenario file contains only TEST_CASEs).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
