/*
 * The common pattern: a quit message calls wshub_stop from its callback, and
 * main calls wshub_stop at exit. The callback's stop only begins the stop
 * (neither deadlock nor free): the callback keeps using its server pointer
 * after the call, callbacks that run during the drain (on_close) get a valid
 * pointer, and main's stop, long after the engine stopped, waits and frees.
 * Run under ASan + UBSan, and built plain under valgrind, by
 * tests/c_api_lifetimes_are_safe.rs.
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "wshub.h"
#include "c_test_util.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static int closed = 0;
static uint16_t close_code = 0;
static int after_stop_ok = 0;

static void on_message(void *ud, wshub_server *s, uint64_t conn, const uint8_t *data, size_t len,
                       wshub_message_kind kind) {
    wshub_result rc;
    (void)ud;
    (void)kind;
    if (len == 4 && memcmp(data, "stop", 4) == 0) {
        wshub_stop(s); /* starts the stop, returns at once */
        /* The pointer stays valid until this callback returns. */
        rc = wshub_send(s, conn, data, len, WSHUB_TEXT);
        pthread_mutex_lock(&lock);
        after_stop_ok = rc == WSHUB_OK || rc == WSHUB_STOPPED || rc == WSHUB_NO_SUCH_CONNECTION;
        pthread_mutex_unlock(&lock);
    }
}

static void on_close(void *ud, wshub_server *s, uint64_t conn, uint16_t code, const char *reason) {
    size_t n = 0;
    (void)ud;
    (void)conn;
    (void)reason;
    wshub_room_size(s, "anything", &n); /* valid pointer during the drain */
    pthread_mutex_lock(&lock);
    closed = 1;
    close_code = code;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
}

int main(void) {
    static const char request[] = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                                  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                                  "Sec-WebSocket-Version: 13\r\n\r\n";
    unsigned char frame[10] = {0x81, 0x84, 1, 2, 3, 4, 0, 0, 0, 0};
    wshub_callbacks callbacks = WSHUB_CALLBACKS_INIT;
    wshub_config *config = wshub_config_new();
    wshub_server *server = NULL;
    struct sockaddr_in addr;
    struct timespec deadline;
    char buf[512];
    int fd, i, ok;
    callbacks.on_message = on_message;
    callbacks.on_close = on_close;
    wshub_config_set_bind(config, "127.0.0.1:0");
    /* This client never answers the close: do not wait 5 s for it. */
    wshub_config_set_close_timeout_ms(config, 300);
    wshub_config_set_shutdown_timeout_ms(config, 300);
    if (wshub_start(config, &callbacks, NULL, &server) != WSHUB_OK)
        return 2;
    wshub_config_free(config);

    fd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(wshub_local_port(server));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
        return 3;
    if (write(fd, request, sizeof request - 1) != (ssize_t)(sizeof request - 1) || read(fd, buf, sizeof buf) <= 0)
        return 4;
    for (i = 0; i < 4; i++)
        frame[6 + i] = (unsigned char)("stop"[i] ^ frame[2 + i]);
    if (write(fd, frame, sizeof frame) != (ssize_t)sizeof frame)
        return 5;

    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 20;
    pthread_mutex_lock(&lock);
    while (!closed && pthread_cond_timedwait(&changed, &lock, &deadline) == 0) {
    }
    ok = closed && close_code == 1001 && after_stop_ok;
    pthread_mutex_unlock(&lock);
    close(fd);
    if (!ok) {
        fprintf(stderr, "closed=%d code=%u after_stop_ok=%d\n", closed, (unsigned)close_code, after_stop_ok);
        return 1;
    }
    /* Long after the callback's stop has finished: the handle is still the
       owner's, and this stop frees it. */
    refused_within(wshub_local_port(server), 20);
    sleep(1);
    wshub_stop(server);
    printf("stop from callback then main ok\n");
    return 0;
}
