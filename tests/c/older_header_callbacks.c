/*
 * A program built against an older header, whose wshub_callbacks ends before
 * on_join: its struct (struct_size and four callbacks, allocated at exactly
 * that size so that ASan sees a read past it) must work, with on_join, which
 * it does not cover, taken as NULL (every join allowed).
 * Run under ASan + UBSan by tests/c_api_lifetimes_are_safe.rs.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "wshub.h"
#include "c_test_util.h"

/* wshub_callbacks as a header from before on_join declared it. */
typedef struct {
    size_t struct_size;
    wshub_on_upgrade on_upgrade;
    wshub_on_connect on_connect;
    wshub_on_message on_message;
    wshub_on_close on_close;
} callbacks_before_on_join;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int connected = 0;

static void on_connect(void *ud, wshub_server *s, uint64_t conn, const wshub_request *request) {
    (void)ud, (void)s, (void)conn, (void)request;
    pthread_mutex_lock(&lock);
    connected++;
    pthread_mutex_unlock(&lock);
}

int main(void) {
    callbacks_before_on_join *old = malloc(sizeof *old);
    wshub_config *config = wshub_config_new();
    wshub_server *server = NULL;
    char reply[4096];
    int fd, ok;
    long n;

    if (old == NULL)
        return 2;
    memset(old, 0, sizeof *old);
    old->struct_size = sizeof *old;
    old->on_connect = on_connect;
    wshub_config_set_bind(config, "127.0.0.1:0");
    wshub_config_set_protocol(config, true);
    wshub_config_set_rate_limit(config, 0);
    if (wshub_start(config, (const wshub_callbacks *)(const void *)old, NULL, &server) != WSHUB_OK)
        return 3;
    wshub_config_free(config);
    free(old); /* copied by wshub_start */

    fd = ws_open(wshub_local_port(server));
    n = fd < 0 ? -1 : ws_read_text(fd, reply, sizeof reply); /* connected */
    if (n < 0 || strstr(reply, "\"connected\"") == NULL)
        return 4;
    if (ws_send_text(fd, "{\"type\":\"room:join\",\"id\":\"j\",\"payload\":{\"room\":\"lobby\"}}") != 0)
        return 5;
    n = ws_read_text(fd, reply, sizeof reply);
    ok = n > 0 && strstr(reply, "\"ack\"") != NULL && strstr(reply, "\"j\"") != NULL;
    close(fd);
    wshub_stop(server);
    pthread_mutex_lock(&lock);
    ok = ok && connected == 1;
    pthread_mutex_unlock(&lock);
    if (!ok) {
        fprintf(stderr, "join reply: %s; connected=%d\n", n > 0 ? reply : "(none)", connected);
        return 1;
    }
    printf("older header callbacks ok\n");
    return 0;
}
