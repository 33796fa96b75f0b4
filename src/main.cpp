#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
    if (argc > 1 && std::strcmp(argv[1], "--version") == 0) {
        std::printf("outbox-relay %s\n", OUTBOX_RELAY_VERSION);
        return 0;
    }
    std::printf("usage: outbox-relay run --postgres CONNINFO --brokers HOST:PORT\n");
    return 0;
}
