/*
 * Two callbacks call wshub_stop at the same moment: the stop happens once,
 * and main's wshub_stop afterwards frees the server once. Run under ASan + UBSan by tests/c_api_lifetimes_are_safe.rs.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>

#include "wshub.h"
#include "c_test_util.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static pthread_barrier_t both;
static int closed = 0, stopped = 0;

static void on_message(void *ud, wshub_server *s, uint64_t conn, const uint8_t *data, size_t len,
                       wshub_message_kind kind) {
    (void)ud, (void)conn, (void)kind;
    if (len != 4 || memcmp(data, "stop", 4) != 0)
        return;
    pthread_barrier_wait(&both);
    wshub_stop(s);
    pthread_mutex_lock(&lock);
    stopped++;
    pthread_mutex_unlock(&lock);
}

static void on_close(void *ud, wshub_server *s, uint64_t conn, uint16_t code, const char *reason) {
    (void)ud, (void)s, (void)conn, (void)reason;
    pthread_mutex_lock(&lock);
    closed += code == 1001;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
}

int main(void) {
    wshub_callbacks callbacks = WSHUB_CALLBACKS_INIT;
    wshub_config *config = wshub_config_new();
    wshub_server *server = NULL;
    struct timespec deadline;
    uint16_t port;
    int a, b, ok, gone;

    pthread_barrier_init(&both, NULL, 2);
    callbacks.on_message = on_message;
    callbacks.on_close = on_close;
    wshub_config_set_bind(config, "127.0.0.1:0");
    wshub_config_set_close_timeout_ms(config, 300);
    wshub_config_set_shutdown_timeout_ms(config, 300);
    if (wshub_start(config, &callbacks, NULL, &server) != WSHUB_OK)
        return 2;
    wshub_config_free(config);
    port = wshub_local_port(server);
    a = ws_open(port);
    b = ws_open(port);
    if (a < 0 || b < 0 || ws_send_text(a, "stop") != 0 || ws_send_text(b, "stop") != 0)
        return 3;

    deadline = deadline_in(20);
    pthread_mutex_lock(&lock);
    while (closed < 2 && pthread_cond_timedwait(&changed, &lock, &deadline) == 0) {
    }
    ok = closed == 2 && stopped == 2;
    pthread_mutex_unlock(&lock);
    gone = refused_within(port, 20);
    close(a);
    close(b);
    sleep(1);
    wshub_stop(server); /* the owner's stop frees */
    pthread_barrier_destroy(&both);
    if (!ok || !gone) {
        fprintf(stderr, "closed=%d stopped=%d port_closed=%d\n", closed, stopped, gone);
        return 1;
    }
    printf("two stops at once ok\n");
    return 0;
}
