/*
 * auth_server: the built-in protocol with token auth and the application's
 * own rules on top, on ws://127.0.0.1:PORT/ws.
 *
 *   ./build/auth_server 9001 [SECRET]     # SECRET defaults to a demo value
 *
 * Shows: wshub_config_set_jwt_secret (every upgrade needs an HS256/384/512
 * token, from "Authorization: Bearer", ?access_token= or a "bearer.<token>"
 * subprotocol entry, else 401, before any callback runs), an on_upgrade that
 * sees the token's user (wshub_request_user) and refuses the user "banned"
 * with 403, and an on_join that refuses rooms named "private:..." to every
 * user but "admin" (the client gets `error forbidden`). Both callbacks run
 * on the connection's reader thread.
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

/* Runs after the token was verified: the user is known. */
static uint16_t on_upgrade(void *user_data, wshub_server *server, uint64_t conn,
                           wshub_request *request) {
    const char *user = wshub_request_user(request);
    (void)user_data;
    (void)server;
    (void)conn;
    if (user != NULL && strcmp(user, "banned") == 0)
        return 403;
    return 0;
}

/* Runs before a join takes effect (after the token's `rooms` claim allowed it). */
static int on_join(void *user_data, wshub_server *server, uint64_t conn, const char *user,
                   const char *room) {
    bool allowed = strncmp(room, "private:", 8) != 0 || (user != NULL && strcmp(user, "admin") == 0);
    (void)user_data;
    (void)server;
    printf("join %llu %s %s: %s\n", (unsigned long long)conn, user != NULL ? user : "-", room,
           allowed ? "allowed" : "refused");
    fflush(stdout);
    return allowed;
}

int main(int argc, char **argv) {
    const char *port = argc > 1 ? argv[1] : "9001";
    const char *secret = argc > 2 ? argv[2] : "auth-example-demo-secret";
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
        rc = wshub_config_set_jwt_secret(config, secret);
    if (rc == WSHUB_OK)
        rc = wshub_config_set_max_connections_per_user(config, 4);
    if (rc == WSHUB_OK) {
        callbacks.on_upgrade = on_upgrade;
        callbacks.on_join = on_join;
        rc = wshub_start(config, &callbacks, NULL, &server);
    }
    wshub_config_free(config);
    if (rc != WSHUB_OK) {
        fprintf(stderr, "auth_server: %s\n", wshub_error_message(rc));
        return 1;
    }
    printf("auth server listening on 127.0.0.1:%u\n", (unsigned)wshub_local_port(server));
    fflush(stdout);

    while (!stop_requested)
        sigsuspend(&old);

    wshub_stop(server);
    printf("stopped\n");
    return 0;
}
