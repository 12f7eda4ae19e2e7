/*
 * wshub's log lines reach a C host: without a callback, a refused handshake's
 * warning goes to stderr in the documented format (checked by the Rust
 * driver); with wshub_set_log_callback at WSHUB_LOG_WARN the callback gets
 * it, with its level and target, and nothing below the level; at
 * WSHUB_LOG_OFF nothing at all. A token in the query is never logged. Run
 * under ASan + UBSan by tests/c_host_gets_logs_and_counters.rs.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "wshub.h"
#include "c_test_util.h"

struct seen {
    pthread_mutex_t lock;
    int records, warnings_404, above_level, secret, bad_target;
    wshub_log_level max_level;
};

static void on_log(void *user_data, wshub_log_level level, const char *target, const char *message) {
    struct seen *s = user_data;
    pthread_mutex_lock(&s->lock);
    s->records++;
    if (level > s->max_level)
        s->above_level++;
    if (level == WSHUB_LOG_WARN && strstr(message, "refused with 404") != NULL)
        s->warnings_404++;
    if (strstr(message, "SECRET") != NULL || strstr(target, "SECRET") != NULL)
        s->secret++;
    if (strncmp(target, "wshub", 5) != 0)
        s->bad_target++;
    pthread_mutex_unlock(&s->lock);
}

/* An upgrade on a path the server does not serve (404), with a token in the
   query; returns once the response is read (wshub logs before it answers). */
static int refused_upgrade(uint16_t port) {
    static const char req[] = "GET /nope?token=SECRET-TOKEN HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                              "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                              "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    char buf[256];
    ssize_t n;
    int fd = tcp_connect(port);
    if (fd < 0)
        return -1;
    if (write(fd, req, sizeof req - 1) != (ssize_t)(sizeof req - 1)) {
        close(fd);
        return -1;
    }
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    return strstr(buf, " 404 ") != NULL ? 0 : -1;
}

static int count(struct seen *s, int *field) {
    int v;
    pthread_mutex_lock(&s->lock);
    v = *field;
    pthread_mutex_unlock(&s->lock);
    return v;
}

int main(void) {
    wshub_callbacks callbacks = WSHUB_CALLBACKS_INIT;
    wshub_config *config = wshub_config_new();
    wshub_server *server = NULL;
    struct seen s;
    uint16_t port;

    memset(&s, 0, sizeof s);
    pthread_mutex_init(&s.lock, NULL);
    s.max_level = WSHUB_LOG_WARN;
    if (wshub_set_log_callback(99, NULL, NULL) != WSHUB_INVALID_ARGUMENT)
        return 2;
    wshub_config_set_bind(config, "127.0.0.1:0");
    if (wshub_start(config, &callbacks, NULL, &server) != WSHUB_OK)
        return 3;
    wshub_config_free(config);
    port = wshub_local_port(server);

    /* 1. No callback: stderr. */
    if (refused_upgrade(port) != 0)
        return 4;
    fflush(stdout);
    printf("phase 1 done\n");
    fflush(stdout);

    /* 2. The callback at WARN: the warning, nothing at INFO (the stop below logs at INFO). */
    if (wshub_set_log_callback(WSHUB_LOG_WARN, on_log, &s) != WSHUB_OK)
        return 5;
    if (refused_upgrade(port) != 0)
        return 6;
    if (count(&s, &s.warnings_404) != 1) {
        fprintf(stderr, "callback got %d 404 warnings, wanted 1\n", count(&s, &s.warnings_404));
        return 7;
    }

    /* 3. Off: nothing at all. */
    if (wshub_set_log_callback(WSHUB_LOG_OFF, on_log, &s) != WSHUB_OK)
        return 8;
    {
        int before = count(&s, &s.records);
        if (refused_upgrade(port) != 0)
            return 9;
        wshub_stop(server); /* logs at INFO: also silenced */
        if (count(&s, &s.records) != before) {
            fprintf(stderr, "%d records while off\n", count(&s, &s.records) - before);
            return 10;
        }
    }
    if (s.above_level != 0 || s.secret != 0 || s.bad_target != 0) {
        fprintf(stderr, "above level %d, secret %d, bad target %d\n", s.above_level, s.secret, s.bad_target);
        return 11;
    }
    /* Back to stderr (NULL callback) so nothing refers to `s` after this. */
    wshub_set_log_callback(WSHUB_LOG_WARN, NULL, NULL);
    pthread_mutex_destroy(&s.lock);
    printf("log_callback: ok\n");
    return 0;
}
