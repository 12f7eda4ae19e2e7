/*
 * wshub_stop must not return while a callback still runs or is still to
 * come: here on_message blocks longer than every timeout of the stop, and
 * the application frees its user_data as soon as wshub_stop returns; on_close
 * reads it. Run under ASan + UBSan by tests/c_api_lifetimes_are_safe.rs.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "wshub.h"
#include "c_test_util.h"

struct app {
    int magic;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static int blocked = 0, release = 0, stop_returned = 0, closed = 0, late_close = 0, magic_seen = 0;

static void on_message(void *ud, wshub_server *s, uint64_t conn, const uint8_t *data, size_t len,
                       wshub_message_kind kind) {
    struct timespec deadline = deadline_in(30);
    (void)ud, (void)s, (void)conn, (void)data, (void)len, (void)kind;
    pthread_mutex_lock(&lock);
    blocked = 1;
    pthread_cond_broadcast(&changed);
    while (!release && pthread_cond_timedwait(&changed, &lock, &deadline) == 0) {
    }
    pthread_mutex_unlock(&lock);
}

static void on_close(void *ud, wshub_server *s, uint64_t conn, uint16_t code, const char *reason) {
    struct app *app = ud;
    (void)s, (void)conn, (void)code, (void)reason;
    pthread_mutex_lock(&lock);
    magic_seen = app->magic; /* a use-after-free if the stop returned already */
    closed = 1;
    late_close = stop_returned;
    pthread_mutex_unlock(&lock);
}

/* Lets on_message go once wshub_stop returned, or after 10 s: longer than
   every bound of the stop (0.1 s + 0.1 s + 1 s + 1 s + 5 s here). */
static void *releaser(void *arg) {
    struct timespec deadline = deadline_in(10);
    (void)arg;
    pthread_mutex_lock(&lock);
    while (!stop_returned && pthread_cond_timedwait(&changed, &lock, &deadline) == 0) {
    }
    release = 1;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
    return NULL;
}

int main(void) {
    wshub_callbacks callbacks = WSHUB_CALLBACKS_INIT;
    wshub_config *config = wshub_config_new();
    wshub_server *server = NULL;
    struct app *app = malloc(sizeof *app);
    struct timespec deadline;
    pthread_t helper;
    int fd, ok;

    if (!app)
        return 2;
    app->magic = 42;
    callbacks.on_message = on_message;
    callbacks.on_close = on_close;
    wshub_config_set_bind(config, "127.0.0.1:0");
    wshub_config_set_close_timeout_ms(config, 100);
    wshub_config_set_shutdown_timeout_ms(config, 100);
    if (wshub_start(config, &callbacks, app, &server) != WSHUB_OK)
        return 2;
    wshub_config_free(config);
    fd = ws_open(wshub_local_port(server));
    if (fd < 0 || ws_send_text(fd, "block") != 0)
        return 3;
    deadline = deadline_in(20);
    pthread_mutex_lock(&lock);
    while (!blocked && pthread_cond_timedwait(&changed, &lock, &deadline) == 0) {
    }
    pthread_mutex_unlock(&lock);
    if (!blocked)
        return 4;

    pthread_create(&helper, NULL, releaser, NULL);
    wshub_stop(server);
    pthread_mutex_lock(&lock);
    stop_returned = 1;
    pthread_cond_broadcast(&changed);
    ok = closed && !late_close;
    pthread_mutex_unlock(&lock);
    free(app); /* the header promises no callback after wshub_stop */
    pthread_join(helper, NULL);
    close(fd);
    /* A late on_close would come about now; give it the chance to show. */
    sleep(1);
    pthread_mutex_lock(&lock);
    ok = ok && closed && !late_close && magic_seen == 42;
    pthread_mutex_unlock(&lock);
    if (!ok) {
        fprintf(stderr, "closed=%d late_close=%d magic=%d\n", closed, late_close, magic_seen);
        return 1;
    }
    printf("stop waits for callbacks ok\n");
    return 0;
}
