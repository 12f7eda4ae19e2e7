/*
 * wshub_stop from inside a callback while no thread can be created
 * (RLIMIT_NPROC, as an unprivileged user): the stop must still happen, the
 * connection get its 1001 and on_close, and the port close. Run under ASan +
 * UBSan by tests/c_api_lifetimes_are_safe.rs, as an unprivileged user.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <sys/resource.h>

#include "wshub.h"
#include "c_test_util.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static int closed = 0, spawn_blocked = 0;
static uint16_t close_code = 0;

/* 1 when creating a thread fails right now. */
static void *nothing(void *arg) { return arg; }
static int cannot_create_threads(void) {
    pthread_t t;
    if (pthread_create(&t, NULL, nothing, NULL) != 0)
        return 1;
    pthread_join(t, NULL);
    return 0;
}

static void on_message(void *ud, wshub_server *s, uint64_t conn, const uint8_t *data, size_t len,
                       wshub_message_kind kind) {
    struct rlimit old, none;
    (void)ud, (void)conn, (void)kind;
    if (len != 4 || memcmp(data, "stop", 4) != 0)
        return;
    getrlimit(RLIMIT_NPROC, &old);
    none = old;
    none.rlim_cur = 1; /* this user already has more tasks than that */
    setrlimit(RLIMIT_NPROC, &none);
    pthread_mutex_lock(&lock);
    spawn_blocked = cannot_create_threads();
    pthread_mutex_unlock(&lock);
    wshub_stop(s);
    setrlimit(RLIMIT_NPROC, &old); /* the sanitizers need threads at exit */
}

static void on_close(void *ud, wshub_server *s, uint64_t conn, uint16_t code, const char *reason) {
    (void)ud, (void)s, (void)conn, (void)reason;
    pthread_mutex_lock(&lock);
    closed = 1;
    close_code = code;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
}

int main(void) {
    wshub_callbacks callbacks = WSHUB_CALLBACKS_INIT;
    wshub_config *config = wshub_config_new();
    wshub_server *server = NULL;
    struct timespec deadline;
    uint16_t port;
    int fd, ok, gone;
    callbacks.on_message = on_message;
    callbacks.on_close = on_close;
    wshub_config_set_bind(config, "127.0.0.1:0");
    wshub_config_set_close_timeout_ms(config, 300);
    wshub_config_set_shutdown_timeout_ms(config, 300);
    if (wshub_start(config, &callbacks, NULL, &server) != WSHUB_OK)
        return 2;
    wshub_config_free(config);
    port = wshub_local_port(server);
    fd = ws_open(port);
    if (fd < 0 || ws_send_text(fd, "stop") != 0)
        return 3;

    deadline = deadline_in(20);
    pthread_mutex_lock(&lock);
    while (!closed && pthread_cond_timedwait(&changed, &lock, &deadline) == 0) {
    }
    ok = closed && close_code == 1001 && spawn_blocked;
    pthread_mutex_unlock(&lock);
    gone = refused_within(port, 20);
    close(fd);
    wshub_stop(server); /* the owner's stop frees */
    if (!ok || !gone) {
        fprintf(stderr, "closed=%d code=%u spawn_blocked=%d port_closed=%d\n", closed, (unsigned)close_code,
                spawn_blocked, gone);
        return 1;
    }
    printf("stop without threads ok\n");
    return 0;
}
