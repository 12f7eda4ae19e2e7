/*
 * Callbacks may run before wshub_start returns, and one may call wshub_stop
 * then. wshub_start must still hand back a live handle (the callback's stop
 * only begins the stop), calls on it must answer (WSHUB_OK or
 * WSHUB_STOPPED), and the owner's wshub_stop must free the server: no
 * use-after-free, no leak: soon after it returns the listening socket is
 * closed too (a server kept alive by a cycle would keep it open). The log callback holds wshub_start at its last
 * line ("listening on ...") until the connection's on_close has run, so
 * the whole stop happens inside wshub_start every time.
 * Run under ASan + UBSan by tests/c_api_lifetimes_are_safe.rs.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <sys/time.h>

#include "wshub.h"
#include "c_test_util.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static int closed = 0, held = 0;
static uint16_t port;

static void on_message(void *ud, wshub_server *s, uint64_t conn, const uint8_t *data, size_t len,
                       wshub_message_kind kind) {
    (void)ud, (void)conn, (void)kind;
    if (len == 4 && memcmp(data, "stop", 4) == 0)
        wshub_stop(s);
}

static void on_close(void *ud, wshub_server *s, uint64_t conn, uint16_t code, const char *reason) {
    (void)ud, (void)s, (void)conn, (void)code, (void)reason;
    pthread_mutex_lock(&lock);
    closed = 1;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
}

static void on_log(void *ud, wshub_log_level level, const char *target, const char *message) {
    struct timespec deadline;
    (void)ud, (void)level, (void)target;
    if (strstr(message, "listening on") == NULL)
        return;
    deadline = deadline_in(20);
    pthread_mutex_lock(&lock);
    while (!closed && pthread_cond_timedwait(&changed, &lock, &deadline) == 0) {
    }
    held = closed;
    pthread_mutex_unlock(&lock);
}

/* Connects as soon as the port listens, asks for the stop, reads to the end. */
static void *client(void *arg) {
    struct timespec pause = {0, 5 * 1000 * 1000};
    struct timeval timeout = {10, 0};
    char buf[256];
    int i, fd = -1;
    (void)arg;
    for (i = 0; i < 4000 && fd < 0; i++) {
        fd = ws_open(port);
        if (fd < 0)
            nanosleep(&pause, NULL);
    }
    if (fd < 0)
        return NULL;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    if (ws_send_text(fd, "stop") == 0)
        while (read(fd, buf, sizeof buf) > 0) {
        }
    close(fd);
    return NULL;
}

int main(void) {
    wshub_callbacks callbacks = WSHUB_CALLBACKS_INIT;
    wshub_config *config = wshub_config_new();
    wshub_server *server = NULL;
    struct sockaddr_in addr;
    socklen_t addr_len = sizeof addr;
    pthread_t thread;
    char address[64];
    size_t count = 0;
    wshub_result rc, count_rc;
    struct timespec pause = {0, 10 * 1000 * 1000};
    int probe, gone, fds_before, fds_after = -1, i;

    /* A first server started and stopped, so that what wshub opens once per
       process is open before the count. */
    wshub_config_set_bind(config, "127.0.0.1:0");
    if (wshub_start(config, &callbacks, NULL, &server) != WSHUB_OK)
        return 2;
    wshub_stop(server);
    server = NULL;
    fds_before = open_fds();

    /* A free port, so that the client can connect before wshub_start returns. */
    probe = socket(AF_INET, SOCK_STREAM, 0);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (probe < 0 || bind(probe, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        getsockname(probe, (struct sockaddr *)&addr, &addr_len) != 0)
        return 2;
    port = ntohs(addr.sin_port);
    close(probe);
    snprintf(address, sizeof address, "127.0.0.1:%u", (unsigned)port);

    callbacks.on_message = on_message;
    callbacks.on_close = on_close;
    wshub_set_log_callback(WSHUB_LOG_INFO, on_log, NULL);
    wshub_config_set_bind(config, address);
    wshub_config_set_close_timeout_ms(config, 300);
    wshub_config_set_shutdown_timeout_ms(config, 300);
    pthread_create(&thread, NULL, client, NULL);
    rc = wshub_start(config, &callbacks, NULL, &server);
    wshub_config_free(config);
    pthread_join(thread, NULL);
    if (rc != WSHUB_OK) {
        fprintf(stderr, "wshub_start: %s\n", wshub_error_message(rc));
        return 3;
    }
    /* The handle is live: calls answer (the engine stopped meanwhile). */
    count_rc = wshub_connection_count(server, &count);
    gone = refused_within(port, 20);
    wshub_stop(server); /* the owner's stop: waits, then frees */
    /* The listener closes with the engine; a reader thread may still be
       letting go of its socket: a bounded wait. */
    for (i = 0; i < 500 && (fds_after = open_fds()) != fds_before; i++)
        nanosleep(&pause, NULL);
    wshub_set_log_callback(WSHUB_LOG_WARN, NULL, NULL);
    if (!held || !gone || (count_rc != WSHUB_OK && count_rc != WSHUB_STOPPED) || count != 0 ||
        fds_after != fds_before) {
        fprintf(stderr, "stopped_during_start=%d port_closed=%d count_rc=%d count=%zu fds %d -> %d\n", held, gone,
                (int)count_rc, count, fds_before, fds_after);
        return 1;
    }
    printf("stop from a callback during start ok\n");
    return 0;
}
