/*
 * wshub_publish and wshub_publish_binary go through the protocol's seq,
 * history and fan-out from any thread: from inside a callback (on_connect),
 * from the main thread and from a thread of the application's own. A
 * member receives all three in seq order; bad arguments get their codes;
 * kick and ban calls answer; a server without the protocol refuses.
 * Run under ASan + UBSan by tests/c_api_lifetimes_are_safe.rs.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>

#include "c_test_util.h"
#include "wshub.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int connects = 0;
static wshub_result callback_rc = WSHUB_PANIC;
static uint64_t callback_seq = 0;

static void on_connect(void *ud, wshub_server *s, uint64_t conn, const wshub_request *request) {
    static const char json[] = "{\"from\":\"callback\"}";
    uint64_t seq = 0;
    wshub_result rc = WSHUB_OK;
    int n;
    (void)ud;
    (void)conn;
    (void)request;
    pthread_mutex_lock(&lock);
    n = ++connects;
    pthread_mutex_unlock(&lock);
    if (n == 2) {
        /* From inside a callback, on the connection's reader thread. */
        rc = wshub_publish(s, "news", (const uint8_t *)json, sizeof json - 1, &seq);
        pthread_mutex_lock(&lock);
        callback_rc = rc;
        callback_seq = seq;
        pthread_mutex_unlock(&lock);
    }
}

struct job {
    wshub_server *server;
    wshub_result rc;
    uint64_t seq;
};

static void *publish_binary(void *arg) {
    struct job *job = arg;
    static const uint8_t body[3] = {'x', 'y', 'z'};
    job->rc = wshub_publish_binary(job->server, "news", body, sizeof body, &job->seq);
    return NULL;
}

/* Reads from fd until `needle` (len bytes) has arrived, for at most 10 s. */
static int read_until(int fd, char *buf, size_t cap, size_t *have, const void *needle, size_t len) {
    struct timespec end = deadline_in(10), now;
    for (;;) {
        size_t i;
        ssize_t n;
        for (i = 0; len <= *have && i + len <= *have; i++)
            if (memcmp(buf + i, needle, len) == 0)
                return 1;
        clock_gettime(CLOCK_REALTIME, &now);
        if (now.tv_sec > end.tv_sec || *have == cap)
            return 0;
        n = read(fd, buf + *have, cap - *have);
        if (n <= 0)
            return 0;
        *have += (size_t)n;
    }
}

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "check failed at line %d: %s\n", __LINE__, #cond);                     \
            return 1;                                                                              \
        }                                                                                          \
    } while (0)

int main(void) {
    static const char join[] = "{\"type\":\"room:join\",\"id\":\"j\",\"payload\":{\"room\":\"news\"}}";
    static const char json[] = "[1,2]";
    static const char from_callback[] = "{\"from\":\"callback\"},\"from\":\"api\",\"room\":\"news\",\"seq\":1";
    static const char from_main[] = "\"data\":[1,2],\"from\":\"api\",\"room\":\"news\",\"seq\":2";
    static const uint8_t binary_message[] = {0x02, 0x00, 0x04, 'n', 'e', 'w', 's', 0, 0, 0, 0, 0, 0, 0, 3, 'x', 'y', 'z'};
    static char buf[1 << 16];
    struct timeval timeout = {10, 0};
    wshub_callbacks callbacks = WSHUB_CALLBACKS_INIT;
    wshub_config *config = wshub_config_new();
    wshub_server *server = NULL, *plain = NULL;
    struct job job;
    pthread_t thread;
    uint64_t seq = 0, until = 0;
    size_t have = 0, count = 99;
    int a, b;
    callbacks.on_connect = on_connect;
    wshub_config_set_bind(config, "127.0.0.1:0");
    wshub_config_set_protocol(config, true);
    wshub_config_set_close_timeout_ms(config, 300);
    CHECK(wshub_start(config, &callbacks, NULL, &server) == WSHUB_OK);

    a = ws_open(wshub_local_port(server));
    CHECK(a >= 0);
    setsockopt(a, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    CHECK(ws_send_text(a, join) == 0);
    CHECK(read_until(a, buf, sizeof buf, &have, "\"id\":\"j\"", strlen("\"id\":\"j\"")));

    /* A second client: its on_connect publishes. */
    b = ws_open(wshub_local_port(server));
    CHECK(b >= 0);
    CHECK(read_until(a, buf, sizeof buf, &have, from_callback, strlen(from_callback)));
    pthread_mutex_lock(&lock);
    CHECK(callback_rc == WSHUB_OK && callback_seq == 1);
    pthread_mutex_unlock(&lock);

    /* From the main thread, then from a thread of our own. */
    CHECK(wshub_publish(server, "news", (const uint8_t *)json, sizeof json - 1, &seq) == WSHUB_OK);
    CHECK(seq == 2);
    CHECK(read_until(a, buf, sizeof buf, &have, from_main, strlen(from_main)));
    job.server = server;
    job.rc = WSHUB_PANIC;
    CHECK(pthread_create(&thread, NULL, publish_binary, &job) == 0);
    CHECK(pthread_join(thread, NULL) == 0);
    CHECK(job.rc == WSHUB_OK && job.seq == 3);
    CHECK(read_until(a, buf, sizeof buf, &have, binary_message, sizeof binary_message));
    CHECK(wshub_publish(server, "news", (const uint8_t *)json, sizeof json - 1, NULL) == WSHUB_OK);

    /* Bad arguments. */
    CHECK(wshub_publish(server, "news", (const uint8_t *)"{oops", 5, &seq) == WSHUB_INVALID_ARGUMENT);
    CHECK(wshub_publish(server, "", (const uint8_t *)json, sizeof json - 1, &seq) == WSHUB_INVALID_ROOM);
    CHECK(wshub_publish(NULL, "news", (const uint8_t *)json, sizeof json - 1, &seq) == WSHUB_NULL_PARAMETER);
    CHECK(wshub_publish(server, NULL, (const uint8_t *)json, sizeof json - 1, &seq) == WSHUB_NULL_PARAMETER);
    CHECK(wshub_publish_binary(server, "news", NULL, 0, &seq) == WSHUB_OK && seq == 5);

    /* Kick and ban: nobody has a user here, so nothing closes. */
    CHECK(wshub_disconnect_user(server, "mallory", 4000, "bye", &count) == WSHUB_OK && count == 0);
    CHECK(wshub_disconnect_user(server, "mallory", 1005, NULL, &count) == WSHUB_INVALID_CLOSE_CODE);
    CHECK(wshub_ban(server, "mallory", 60, &until) == WSHUB_OK && until > 0);
    CHECK(wshub_ban(server, "mallory", 0, &until) == WSHUB_INVALID_ARGUMENT);
    CHECK(wshub_unban(server, "mallory") == WSHUB_OK);

    /* Without the protocol there is nothing to publish into. */
    wshub_config_set_protocol(config, false);
    CHECK(wshub_start(config, &callbacks, NULL, &plain) == WSHUB_OK);
    CHECK(wshub_publish(plain, "news", (const uint8_t *)json, sizeof json - 1, &seq) == WSHUB_REFUSED);
    CHECK(wshub_ban(plain, "mallory", 60, NULL) == WSHUB_REFUSED);
    wshub_stop(plain);
    wshub_config_free(config);

    close(a);
    close(b);
    wshub_stop(server);
    puts("publish from callback ok");
    return 0;
}
