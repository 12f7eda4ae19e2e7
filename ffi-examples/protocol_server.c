/*
 * protocol_server: wshub's built-in wire protocol v1 (rooms with seq numbers,
 * history, presence, acks; see PROTOCOL.md) on ws://127.0.0.1:PORT/ws, with
 * /healthz, /metrics, / and /client.js over plain HTTP.
 *
 *   ./build/protocol_server 9001
 *
 * Shows: wshub_config_set_protocol and the protocol's settings, an on_upgrade
 * that decides before the protocol does (where auth belongs: here ?deny=1 is
 * refused with 403), and on_connect / on_close running alongside the protocol.
 * There is no on_message: with the protocol on, it handles every message.
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "wshub.h"

static volatile sig_atomic_t stop_requested = 0;

static void on_sigint(int sig) {
    (void)sig;
    stop_requested = 1;
}

/* Runs first; the protocol's own checks (draining) follow an accept. */
static uint16_t on_upgrade(void *user_data, wshub_server *server, uint64_t conn,
                           wshub_request *request) {
    const char *deny = wshub_request_query_param(request, "deny");
    (void)user_data;
    (void)server;
    (void)conn;
    return deny != NULL && strcmp(deny, "1") == 0 ? 403 : 0;
}

/* The protocol has already sent this client its `connected` frame. */
static void on_connect(void *user_data, wshub_server *server, uint64_t conn,
                       const wshub_request *request) {
    (void)user_data;
    (void)server;
    printf("connect %llu from %s\n", (unsigned long long)conn, wshub_request_remote_addr(request));
    fflush(stdout);
}

/* The protocol has already told the connection's rooms that it left. */
static void on_close(void *user_data, wshub_server *server, uint64_t conn, uint16_t code,
                     const char *reason) {
    (void)user_data;
    (void)server;
    printf("close %llu (%u) %s\n", (unsigned long long)conn, (unsigned)code, reason);
    fflush(stdout);
}

int main(int argc, char **argv) {
    const char *port = argc > 1 ? argv[1] : "9001";
    char address[64];
    wshub_callbacks callbacks = WSHUB_CALLBACKS_INIT;
    wshub_server *server = NULL;
    wshub_config *config;
    wshub_result rc;
    struct sigaction sa;
    sigset_t block, old;

    /* Only the main thread takes SIGINT: wshub's threads inherit this mask. */
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    sa.sa_handler = on_sigint;
    sa.sa_flags = 0;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    config = wshub_config_new();
    snprintf(address, sizeof address, "127.0.0.1:%s", port);
    rc = wshub_config_set_bind(config, address);
    if (rc == WSHUB_OK)
        rc = wshub_config_set_protocol(config, true);
    if (rc == WSHUB_OK)
        rc = wshub_config_set_rate_limit(config, 50); /* messages/s per client; 0 = off */
    if (rc == WSHUB_OK)
        rc = wshub_config_set_history_size(config, 500); /* per room, for recovery */
    if (rc == WSHUB_OK) {
        callbacks.on_upgrade = on_upgrade;
        callbacks.on_connect = on_connect;
        callbacks.on_close = on_close;
        rc = wshub_start(config, &callbacks, NULL, &server);
    }
    wshub_config_free(config);
    if (rc != WSHUB_OK) {
        fprintf(stderr, "protocol_server: %s\n", wshub_error_message(rc));
        return 1;
    }
    printf("protocol server listening on 127.0.0.1:%u\n", (unsigned)wshub_local_port(server));
    fflush(stdout);

    while (!stop_requested)
        sigsuspend(&old);

    wshub_stop(server); /* every client gets 1001, and on_close runs, before this returns */
    printf("stopped\n");
    return 0;
}
