/*
 * A C host with namespaces and a join hook that grants read-only
 * membership: "feed:" rooms take no client publishes
 * (wshub_config_add_namespace with client_publish false), "stage:" rooms
 * take at most 2 members and send no join/leave events, and on_join makes
 * every member of a "ro:" room read-only (WSHUB_JOIN_READ_ONLY). First it
 * checks the argument errors of wshub_config_add_namespace and the
 * wshub_config_set_proxy_* setters. Prints "listening on
 * 127.0.0.1:PORT", serves until stdin ends, then stops.
 * Driven by tests/c_host_namespaces_and_read_only_joins.rs.
 */
#include <stdio.h>
#include <string.h>

#include "wshub.h"

static int join_hook(void *user_data, wshub_server *server, uint64_t conn, const char *user, const char *room) {
    (void)user_data;
    (void)server;
    (void)conn;
    (void)user;
    return strncmp(room, "ro:", 3) == 0 ? WSHUB_JOIN_READ_ONLY : 1;
}

#define CHECK(call, want)                                                                                   \
    do {                                                                                                   \
        wshub_result got_ = (call);                                                                        \
        if (got_ != (want)) {                                                                              \
            fprintf(stderr, "%s: got %d, want %d\n", #call, (int)got_, (int)(want));                       \
            return 1;                                                                                      \
        }                                                                                                  \
    } while (0)

int main(void) {
    wshub_callbacks callbacks = WSHUB_CALLBACKS_INIT;
    wshub_namespace_options feed = WSHUB_NAMESPACE_OPTIONS_INIT;
    wshub_namespace_options stage = WSHUB_NAMESPACE_OPTIONS_INIT;
    wshub_namespace_options unsized_options = WSHUB_NAMESPACE_OPTIONS_INIT;
    wshub_config *config = wshub_config_new();
    wshub_config *bad = wshub_config_new();
    wshub_server *server = NULL;
    wshub_result rc;
    char why[512];

    /* Argument errors, and a bad prefix refused by wshub_start. */
    unsized_options.struct_size = 0;
    CHECK(wshub_config_add_namespace(NULL, "a:", NULL), WSHUB_NULL_PARAMETER);
    CHECK(wshub_config_add_namespace(config, NULL, NULL), WSHUB_NULL_PARAMETER);
    CHECK(wshub_config_add_namespace(config, "a:", &unsized_options), WSHUB_INVALID_ARGUMENT);
    wshub_config_set_bind(bad, "127.0.0.1:0");
    wshub_config_set_protocol(bad, true);
    CHECK(wshub_config_add_namespace(bad, "", NULL), WSHUB_OK);
    CHECK(wshub_start(bad, &callbacks, NULL, &server), WSHUB_INVALID_CONFIG);
    wshub_config_free(bad);

    /* The proxy setters: argument errors, and a URL that is not http://. */
    CHECK(wshub_config_set_proxy_connect(NULL, "http://127.0.0.1:1/"), WSHUB_NULL_PARAMETER);
    CHECK(wshub_config_set_proxy_join(NULL, NULL), WSHUB_NULL_PARAMETER);
    CHECK(wshub_config_set_proxy_publish(NULL, NULL), WSHUB_NULL_PARAMETER);
    CHECK(wshub_config_set_proxy_timeout_ms(NULL, 5), WSHUB_NULL_PARAMETER);
    CHECK(wshub_config_set_proxy_key(NULL, "k"), WSHUB_NULL_PARAMETER);
    bad = wshub_config_new();
    wshub_config_set_bind(bad, "127.0.0.1:0");
    wshub_config_set_protocol(bad, true);
    CHECK(wshub_config_set_proxy_key(bad, "k"), WSHUB_OK);
    CHECK(wshub_config_set_proxy_timeout_ms(bad, 500), WSHUB_OK);
    CHECK(wshub_config_set_proxy_join(bad, "https://backend.example/join"), WSHUB_OK);
    CHECK(wshub_start(bad, &callbacks, NULL, &server), WSHUB_INVALID_CONFIG);
    CHECK(wshub_config_set_proxy_join(bad, NULL), WSHUB_OK);
    CHECK(wshub_config_set_proxy_timeout_ms(bad, 0), WSHUB_OK);
    CHECK(wshub_start(bad, &callbacks, NULL, &server), WSHUB_INVALID_CONFIG);
    wshub_config_free(bad);

    feed.client_publish = false;
    stage.join_leave = false;
    stage.max_members = 2;
    callbacks.on_join = join_hook;
    wshub_config_set_bind(config, "127.0.0.1:0");
    wshub_config_set_protocol(config, true);
    wshub_config_set_rate_limit(config, 0);
    wshub_config_set_shutdown_timeout_ms(config, 2000);
    CHECK(wshub_config_add_namespace(config, "feed:", &feed), WSHUB_OK);
    CHECK(wshub_config_add_namespace(config, "stage:", &stage), WSHUB_OK);
    CHECK(wshub_config_add_namespace(config, "plain:", NULL), WSHUB_OK);
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
    wshub_stop(server);
    printf("stopped\n");
    return 0;
}
