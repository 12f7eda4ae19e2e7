/*
 * A C host with the wire protocol on, for tests that drive it from outside:
 * prints "listening on 127.0.0.1:PORT", serves until its stdin ends, then
 * calls wshub_stop and prints "stopped in N ms". With an argument, that is
 * the Redis URL (wshub_config_set_redis). The shutdown timeout is 2 s.
 * Driven by tests/c_host_with_redis_starts_and_stops.rs and
 * tests/clients_survive_a_paused_server.rs.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <time.h>

#include "wshub.h"

static long now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

int main(int argc, char **argv) {
    wshub_callbacks callbacks = WSHUB_CALLBACKS_INIT;
    wshub_config *config = wshub_config_new();
    wshub_server *server = NULL;
    wshub_result rc;
    char why[512];
    long started;

    wshub_config_set_bind(config, "127.0.0.1:0");
    wshub_config_set_protocol(config, true);
    wshub_config_set_rate_limit(config, 0);
    wshub_config_set_shutdown_timeout_ms(config, 2000);
    wshub_config_set_close_timeout_ms(config, 1000);
    if (argc > 1)
        wshub_config_set_redis(config, argv[1]);
    rc = wshub_start(config, &callbacks, NULL, &server);
    wshub_config_free(config);
    if (rc != WSHUB_OK) {
        wshub_last_error(why, sizeof why);
        fprintf(stderr, "wshub_start: %s\n", why);
        return 2;
    }
    printf("listening on 127.0.0.1:%u\n", (unsigned)wshub_local_port(server));
    fflush(stdout);
    while (getchar() != EOF) {
    }
    started = now_ms();
    wshub_stop(server);
    printf("stopped in %ld ms\n", now_ms() - started);
    return 0;
}
