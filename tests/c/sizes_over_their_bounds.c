/*
 * Every size, count and duration setter given a value over its bound (2^40,
 * SIZE_MAX, UINT64_MAX ms): wshub_start refuses the config with
 * WSHUB_INVALID_CONFIG instead of aborting the host (a 2^40-slot queue used
 * to abort inside wshub_start; a 2^40-byte read buffer aborted at the first
 * client; SIZE_MAX panicked and printed it on stderr). Logging is off: the
 * driving test checks that stderr stays empty.
 * Run under ASan + UBSan by tests/c_api_rejects_bad_arguments.rs.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>

#include "wshub.h"
#include "c_test_util.h"

typedef wshub_result (*size_setter)(wshub_config *, size_t);
typedef wshub_result (*ms_setter)(wshub_config *, uint64_t);

static const struct {
    const char *name;
    size_setter set;
} sizes[] = {
    {"max_message_size", wshub_config_set_max_message_size},
    {"outbound_queue", wshub_config_set_outbound_queue},
    {"outbound_max_bytes", wshub_config_set_outbound_max_bytes},
    {"max_fragments", wshub_config_set_max_fragments},
    {"max_connections", wshub_config_set_max_connections},
    {"reader_stack_size", wshub_config_set_reader_stack_size},
    {"writer_stack_size", wshub_config_set_writer_stack_size},
    {"read_buffer_size", wshub_config_set_read_buffer_size},
    {"write_buffer_size", wshub_config_set_write_buffer_size},
    {"hub_queue", wshub_config_set_hub_queue},
    {"max_handshakes", wshub_config_set_max_handshakes},
    {"max_handshakes_per_ip", wshub_config_set_max_handshakes_per_ip},
    {"max_connections_per_ip", wshub_config_set_max_connections_per_ip},
    {"overflow_sockets", wshub_config_set_overflow_sockets},
    {"event_queue_capacity", wshub_config_set_event_queue_capacity},
    {"history_size", wshub_config_set_history_size},
    {"history_max_bytes", wshub_config_set_history_max_bytes},
    {"history_total_max_bytes", wshub_config_set_history_total_max_bytes},
    {"replay_max_bytes", wshub_config_set_replay_max_bytes},
    {"max_rooms_per_client", wshub_config_set_max_rooms_per_client},
    {"max_rooms", wshub_config_set_max_rooms},
    {"max_reply_backlog", wshub_config_set_max_reply_backlog},
    {"max_connections_per_user", wshub_config_set_max_connections_per_user},
    {"max_bans", wshub_config_set_max_bans},
};

static const struct {
    const char *name;
    ms_setter set;
} durations[] = {
    {"heartbeat_interval", wshub_config_set_heartbeat_interval_ms},
    {"idle_timeout", wshub_config_set_idle_timeout_ms},
    {"handshake_timeout", wshub_config_set_handshake_timeout_ms},
    {"close_timeout", wshub_config_set_close_timeout_ms},
    {"shutdown_timeout", wshub_config_set_shutdown_timeout_ms},
    {"upgrade_timeout", wshub_config_set_upgrade_timeout_ms},
    {"history_ttl", wshub_config_set_history_ttl_ms},
};

static int failures = 0;

/* A fresh config (protocol on, port 0) with one setter applied. */
static wshub_config *base(void) {
    wshub_config *config = wshub_config_new();
    wshub_config_set_bind(config, "127.0.0.1:0");
    wshub_config_set_protocol(config, true);
    return config;
}

/* Both start functions must refuse `config` (only wshub_start_polling for the
   settings only pull mode uses), naming `name` in the last error. */
static void expect_refused(wshub_config *config, const char *name, const char *value) {
    int polling_only = strcmp(name, "event_queue_capacity") == 0 || strcmp(name, "upgrade_timeout") == 0;
    wshub_callbacks callbacks = WSHUB_CALLBACKS_INIT;
    wshub_server *server = NULL;
    wshub_result with_callbacks, polling;
    char why[256];
    with_callbacks = wshub_start(config, &callbacks, NULL, &server);
    if (with_callbacks == WSHUB_OK)
        wshub_stop(server);
    server = NULL;
    polling = wshub_start_polling(config, &server);
    wshub_last_error(why, sizeof why);
    if (polling == WSHUB_OK)
        wshub_stop(server);
    if ((with_callbacks != WSHUB_INVALID_CONFIG && !polling_only) || polling != WSHUB_INVALID_CONFIG || strstr(why, name) == NULL) {
        printf("%s = %s: wshub_start %s, wshub_start_polling %s (%s)\n", name, value,
               wshub_error_message(with_callbacks), wshub_error_message(polling), why);
        failures++;
    }
    wshub_config_free(config);
}

int main(void) {
    const size_t huge[] = {(size_t)1 << 40, SIZE_MAX};
    const char *huge_text[] = {"2^40", "SIZE_MAX"};
    wshub_callbacks callbacks = WSHUB_CALLBACKS_INIT;
    wshub_server *server = NULL;
    wshub_config *config;
    size_t i, j;
    int fd;

    wshub_set_log_callback(WSHUB_LOG_OFF, NULL, NULL);
    for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        for (j = 0; j < 2; j++) {
            config = base();
            sizes[i].set(config, huge[j]);
            expect_refused(config, sizes[i].name, huge_text[j]);
        }
    for (i = 0; i < sizeof durations / sizeof durations[0]; i++) {
        config = base();
        durations[i].set(config, UINT64_MAX);
        expect_refused(config, durations[i].name, "UINT64_MAX ms");
    }

    /* At the bounds' scale of a real deployment, a server starts and serves. */
    config = base();
    wshub_config_set_read_buffer_size(config, (size_t)1 << 20);
    wshub_config_set_hub_queue(config, (size_t)1 << 16);
    if (wshub_start(config, &callbacks, NULL, &server) != WSHUB_OK) {
        printf("a reasonable config was refused\n");
        return 1;
    }
    wshub_config_free(config);
    fd = ws_open(wshub_local_port(server));
    if (fd < 0)
        failures++;
    else
        close(fd);
    wshub_stop(server);
    if (failures != 0)
        return 1;
    printf("sizes over their bounds ok\n");
    return 0;
}
