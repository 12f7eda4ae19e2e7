/*
 * Peers that send a valid upgrade and reset before their 101 is sent: the
 * per-connection state on_upgrade attached (an identity) must be gone once
 * the connection is, although on_connect and on_close never come. Run under
 * ASan + UBSan by tests/c_api_lifetimes_are_safe.rs.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>

#include "wshub.h"
#include "c_test_util.h"

#define PEERS 20

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static uint64_t asked = 0; /* the conn whose on_upgrade waits, 0 when none */
static int reset_done = 0, connects = 0;

static uint16_t on_upgrade(void *ud, wshub_server *s, uint64_t conn, wshub_request *request) {
    struct timespec deadline = deadline_in(20);
    (void)ud, (void)s;
    wshub_request_set_identity(request, "peer");
    pthread_mutex_lock(&lock);
    asked = conn;
    reset_done = 0;
    pthread_cond_broadcast(&changed);
    while (!reset_done && pthread_cond_timedwait(&changed, &lock, &deadline) == 0) {
    }
    pthread_mutex_unlock(&lock);
    return 0; /* accept: the 101 goes to a peer that is gone */
}

static void on_connect(void *ud, wshub_server *s, uint64_t conn, const wshub_request *request) {
    (void)ud, (void)s, (void)conn, (void)request;
    pthread_mutex_lock(&lock);
    connects++;
    pthread_mutex_unlock(&lock);
}

int main(void) {
    wshub_callbacks callbacks = WSHUB_CALLBACKS_INIT;
    wshub_config *config = wshub_config_new();
    wshub_server *server = NULL;
    struct linger reset = {1, 0};
    struct timespec deadline, pause = {0, 1000 * 1000};
    char buf[64];
    size_t len = 0;
    uint64_t conn;
    int i, j, fd, left = 0;
    wshub_result rc = WSHUB_OK;
    callbacks.on_upgrade = on_upgrade;
    callbacks.on_connect = on_connect;
    wshub_config_set_bind(config, "127.0.0.1:0");
    if (wshub_start(config, &callbacks, NULL, &server) != WSHUB_OK)
        return 2;
    wshub_config_free(config);

    for (i = 0; i < PEERS; i++) {
        fd = tcp_connect(wshub_local_port(server));
        if (fd < 0 || write(fd, ws_request, sizeof ws_request - 1) != (ssize_t)(sizeof ws_request - 1))
            return 3;
        deadline = deadline_in(20);
        pthread_mutex_lock(&lock);
        while (!asked && pthread_cond_timedwait(&changed, &lock, &deadline) == 0) {
        }
        conn = asked;
        pthread_mutex_unlock(&lock);
        if (!conn)
            return 4;
        /* Reset the connection while on_upgrade still holds the 101 back. */
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
        close(fd);
        pthread_mutex_lock(&lock);
        asked = 0;
        reset_done = 1;
        pthread_cond_broadcast(&changed);
        pthread_mutex_unlock(&lock);
        /* The connection is over once the reader is past its 101: its state
           must go with it. Bounded: 5 s per peer. */
        for (j = 0; j < 5000; j++) {
            rc = wshub_conn_identity(server, conn, buf, sizeof buf, &len);
            if (rc == WSHUB_NO_SUCH_CONNECTION)
                break;
            nanosleep(&pause, NULL);
        }
        if (rc != WSHUB_NO_SUCH_CONNECTION) {
            left = PEERS - i; /* this one and those not tried */
            break;
        }
    }
    wshub_stop(server);
    if (left != 0 || connects != 0) {
        fprintf(stderr, "%d of %d reset peers still have their state; %d on_connect\n", left, PEERS, connects);
        return 1;
    }
    printf("reset peers leave nothing ok\n");
    return 0;
}
