/*
 * The log callback is a callback: a wshub_stop from inside it only begins
 * the stop, on whichever thread it logs. Two cases that went wrong:
 *  - the log callback runs on the host's own thread inside a wshub call
 *    (wshub_reload_tls logs why it failed) and stops the server there: that
 *    stop must not take the owner's reference, or main's wshub_stop at exit
 *    reads freed memory;
 *  - it runs on the thread that performs the stop ("stopping: draining
 *    connections") and stops again: that must not wait for itself, and the
 *    stop must finish (the port closes, on_close runs) before main's
 *    wshub_stop returns.
 * wshub_shutdown from inside the log callback returns WSHUB_WRONG_MODE.
 * Run under ASan + UBSan, and built plain under valgrind, by
 * tests/c_api_lifetimes_are_safe.rs.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "wshub.h"
#include "c_test_util.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static wshub_server *stop_me = NULL; /* set while the log callback may stop it */
static int stops_from_log = 0;
static int shutdown_refused = 1;
static int closed = 0;

static void log_line(void *ud, wshub_log_level level, const char *target, const char *message) {
    wshub_server *server;
    (void)ud;
    (void)level;
    (void)target;
    (void)message;
    pthread_mutex_lock(&lock);
    server = stop_me;
    pthread_mutex_unlock(&lock);
    if (server == NULL)
        return;
    if (wshub_shutdown(server) != WSHUB_WRONG_MODE)
        shutdown_refused = 0;
    wshub_stop(server);
    pthread_mutex_lock(&lock);
    stops_from_log++;
    pthread_mutex_unlock(&lock);
}

static void on_message(void *ud, wshub_server *s, uint64_t conn, const uint8_t *data, size_t len,
                       wshub_message_kind kind) {
    (void)ud;
    (void)conn;
    (void)data;
    (void)len;
    (void)kind;
    wshub_stop(s); /* begins the stop; the stopping thread logs, and its log callback stops too */
}

static void on_close(void *ud, wshub_server *s, uint64_t conn, uint16_t code, const char *reason) {
    (void)ud;
    (void)s;
    (void)conn;
    (void)code;
    (void)reason;
    pthread_mutex_lock(&lock);
    closed = 1;
    pthread_mutex_unlock(&lock);
}

/* Starts a server whose log callback stops it. */
static wshub_server *start(void) {
    wshub_callbacks callbacks = WSHUB_CALLBACKS_INIT;
    wshub_config *config = wshub_config_new();
    wshub_server *server = NULL;
    callbacks.on_message = on_message;
    callbacks.on_close = on_close;
    wshub_config_set_bind(config, "127.0.0.1:0");
    wshub_config_set_close_timeout_ms(config, 300);
    wshub_config_set_shutdown_timeout_ms(config, 300);
    if (wshub_start(config, &callbacks, NULL, &server) != WSHUB_OK)
        server = NULL;
    wshub_config_free(config);
    pthread_mutex_lock(&lock);
    stop_me = server;
    pthread_mutex_unlock(&lock);
    return server;
}

int main(void) {
    wshub_server *server;
    uint16_t port;
    int fd, ok = 1, stops, was_closed;

    if (wshub_set_log_callback(WSHUB_LOG_INFO, log_line, NULL) != WSHUB_OK)
        return 2;

    /* 1. On the host's thread, inside a wshub call. */
    server = start();
    if (server == NULL)
        return 3;
    port = wshub_local_port(server);
    if (wshub_reload_tls(server) != WSHUB_INVALID_CONFIG) { /* no TLS: fails, and logs why */
        printf("reload_tls did not fail\n");
        ok = 0;
    }
    if (!refused_within(port, 10)) {
        printf("the log callback's stop on the host's thread did not stop the server\n");
        ok = 0;
    }
    pthread_mutex_lock(&lock);
    stop_me = NULL;
    stops = stops_from_log;
    pthread_mutex_unlock(&lock);
    if (stops == 0) {
        printf("the log callback never ran\n");
        ok = 0;
    }
    wshub_stop(server); /* the owner's: waits and frees */

    /* 2. On the thread that performs the stop. */
    server = start();
    if (server == NULL)
        return 4;
    port = wshub_local_port(server);
    fd = ws_open(port);
    if (fd < 0 || ws_send_text(fd, "quit") != 0)
        return 5;
    if (!refused_within(port, 10)) {
        printf("the stop begun from a callback never finished\n");
        ok = 0;
    }
    pthread_mutex_lock(&lock);
    stop_me = NULL;
    pthread_mutex_unlock(&lock);
    wshub_stop(server);
    pthread_mutex_lock(&lock);
    was_closed = closed;
    pthread_mutex_unlock(&lock);
    if (!was_closed) {
        printf("wshub_stop returned before on_close ran\n");
        ok = 0;
    }
    close(fd);
    if (!shutdown_refused) {
        printf("wshub_shutdown from the log callback was not refused\n");
        ok = 0;
    }
    wshub_set_log_callback(WSHUB_LOG_WARN, NULL, NULL);
    if (ok)
        printf("stop from the log callback ok\n");
    return ok ? 0 : 1;
}
