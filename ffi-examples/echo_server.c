/*
 * echo_server: echoes every text and binary message on ws://127.0.0.1:PORT/ws.
 *
 *   ./build/echo_server 9001      (port 0 picks a free port)
 *   ./build/echo_server 9001 33554432   (conformance mode: a larger message
 *                                        limit in bytes, 4x that queued per
 *                                        client, no frame-rate or fragment
 *                                        limits, permessage-deflate on: the
 *                                        Autobahn run needs 16 MB messages,
 *                                        1000-message bursts and compression)
 *   ./build/echo_server 9001 0 cert.pem key.pem   (wss:// with this
 *                                        certificate and key; SIGHUP re-reads
 *                                        them; 0 keeps the default limits)
 *
 * Shows: the config builder, wshub_start with one callback, wshub_send from
 * inside a callback, a clean SIGINT shutdown with wshub_stop, compression
 * (wshub_config_set_compression), and TLS
 * (wshub_config_set_tls_cert_file / _key_file, wshub_reload_tls on SIGHUP).
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "wshub.h"

static volatile sig_atomic_t stop_requested = 0;
static volatile sig_atomic_t reload_requested = 0;

static void on_sigint(int sig) {
    (void)sig;
    stop_requested = 1;
}

static void on_sighup(int sig) {
    (void)sig;
    reload_requested = 1;
}

/* Runs on the connection's own thread; wshub_send copies the bytes. */
static void on_message(void *user_data, wshub_server *server, uint64_t conn,
                       const uint8_t *data, size_t length, wshub_message_kind kind) {
    (void)user_data;
    wshub_send(server, conn, data, length, kind);
}

int main(int argc, char **argv) {
    const char *port = argc > 1 ? argv[1] : "9001";
    size_t max_message = argc > 2 ? (size_t)strtoull(argv[2], NULL, 10) : 0;
    const char *tls_cert = argc > 4 ? argv[3] : NULL;
    const char *tls_key = argc > 4 ? argv[4] : NULL;
    char address[64];
    wshub_callbacks callbacks = WSHUB_CALLBACKS_INIT;
    wshub_server *server = NULL;
    wshub_config *config;
    wshub_result rc;
    struct sigaction sa;
    sigset_t block, old;

    /* Block SIGINT before any wshub thread exists (threads inherit the mask),
       so only sigsuspend() below ever receives it. */
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    sa.sa_handler = on_sigint;
    sa.sa_flags = 0;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sa.sa_handler = on_sighup;
    sigaction(SIGHUP, &sa, NULL);

    config = wshub_config_new();
    snprintf(address, sizeof address, "127.0.0.1:%s", port);
    rc = wshub_config_set_bind(config, address);
    if (rc == WSHUB_OK && max_message > 0)
        rc = wshub_config_set_max_message_size(config, max_message);
    if (rc == WSHUB_OK && max_message > 0)
        rc = wshub_config_set_outbound_max_bytes(config, 4 * max_message);
    if (rc == WSHUB_OK && max_message > 0)
        rc = wshub_config_set_frame_rate_limit(config, 0);
    if (rc == WSHUB_OK && max_message > 0)
        rc = wshub_config_set_max_fragments(config, 0);
    if (rc == WSHUB_OK && max_message > 0)
        rc = wshub_config_set_compression(config, true);
    if (rc == WSHUB_OK && tls_cert != NULL)
        rc = wshub_config_set_tls_cert_file(config, tls_cert);
    if (rc == WSHUB_OK && tls_key != NULL)
        rc = wshub_config_set_tls_key_file(config, tls_key);
    if (rc == WSHUB_OK) {
        callbacks.on_message = on_message;
        rc = wshub_start(config, &callbacks, NULL, &server);
    }
    wshub_config_free(config);
    if (rc != WSHUB_OK) {
        fprintf(stderr, "echo_server: %s\n", wshub_error_message(rc));
        return 1;
    }
    printf("wshub %s echo server (%s) listening on 127.0.0.1:%u\n", wshub_version(),
           tls_cert != NULL ? "wss" : "ws", (unsigned)wshub_local_port(server));
    fflush(stdout);

    while (!stop_requested) {
        sigsuspend(&old);
        if (reload_requested) {
            reload_requested = 0;
            /* New connections get the new certificate; a bad file keeps the old one. */
            rc = wshub_reload_tls(server);
            printf("reload: %s\n", wshub_error_message(rc));
            fflush(stdout);
        }
    }

    wshub_stop(server); /* graceful: 1001 to every client, joins every thread */
    printf("stopped\n");
    return 0;
}
