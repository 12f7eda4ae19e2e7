/*
 * chat_server: room chat on ws://127.0.0.1:PORT/ws?room=NAME&name=NICK.
 *
 *   ./build/chat_server 9001
 *
 * Shows: on_upgrade reading the query and attaching an identity, per-connection
 * user data (the room), wshub_join / wshub_broadcast, join and leave
 * announcements, and freeing per-connection state in on_close.
 */
#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wshub.h"

/* What we keep per connection (its wshub user data). */
struct member {
    char room[129];
    char name[64];
};

static volatile sig_atomic_t stop_requested = 0;

static void on_sigint(int sig) {
    (void)sig;
    stop_requested = 1;
}

static void announce(wshub_server *server, const char *room, const char *text) {
    wshub_broadcast(server, room, (const uint8_t *)text, strlen(text), WSHUB_TEXT, 0);
}

/* Before the 101: refuse bad room names, attach the nickname as identity. */
static uint16_t on_upgrade(void *user_data, wshub_server *server, uint64_t conn,
                           wshub_request *request) {
    const char *room = wshub_request_query_param(request, "room");
    const char *name = wshub_request_query_param(request, "name");
    char fallback[32];
    (void)user_data;
    (void)server;
    if (room != NULL && (room[0] == '\0' || strlen(room) > 128))
        return 400;
    if (name == NULL || name[0] == '\0' || strlen(name) >= sizeof ((struct member *)0)->name) {
        snprintf(fallback, sizeof fallback, "guest%llu", (unsigned long long)conn);
        name = fallback;
    }
    wshub_request_set_identity(request, name);
    return 0;
}

static void on_connect(void *user_data, wshub_server *server, uint64_t conn,
                       const wshub_request *request) {
    const char *room = wshub_request_query_param(request, "room");
    struct member *m = calloc(1, sizeof *m);
    size_t len = 0;
    char line[256];
    (void)user_data;
    if (m == NULL) {
        wshub_close(server, conn, 1011, "out of memory");
        return;
    }
    snprintf(m->room, sizeof m->room, "%s", room ? room : "lobby");
    if (wshub_conn_identity(server, conn, m->name, sizeof m->name, &len) != WSHUB_OK)
        snprintf(m->name, sizeof m->name, "guest%llu", (unsigned long long)conn);
    wshub_conn_set_user_data(server, conn, m);
    if (wshub_join(server, conn, m->room) != WSHUB_OK) {
        wshub_close(server, conn, 1008, "bad room name");
        return;
    }
    snprintf(line, sizeof line, "* %s joined %s", m->name, m->room);
    announce(server, m->room, line);
}

static void on_message(void *user_data, wshub_server *server, uint64_t conn,
                       const uint8_t *data, size_t length, wshub_message_kind kind) {
    struct member *m = wshub_conn_user_data(server, conn);
    char *line;
    size_t n;
    (void)user_data;
    if (m == NULL)
        return;
    if (kind != WSHUB_TEXT) {
        wshub_broadcast(server, m->room, data, length, kind, 0);
        return;
    }
    n = strlen(m->name) + length + 3;
    line = malloc(n + 1);
    if (line == NULL)
        return;
    snprintf(line, n + 1, "%s: %s", m->name, (const char *)data); /* text is NUL-terminated */
    wshub_broadcast(server, m->room, (const uint8_t *)line, strlen(line), WSHUB_TEXT, 0);
    free(line);
}

/* The connection is already out of its room; tell the others, free our state. */
static void on_close(void *user_data, wshub_server *server, uint64_t conn, uint16_t code,
                     const char *reason) {
    struct member *m = wshub_conn_user_data(server, conn);
    char line[256];
    (void)user_data;
    (void)reason;
    if (m == NULL)
        return;
    snprintf(line, sizeof line, "* %s left %s (%u)", m->name, m->room, (unsigned)code);
    announce(server, m->room, line);
    free(m);
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
    if (rc == WSHUB_OK) {
        callbacks.on_upgrade = on_upgrade;
        callbacks.on_connect = on_connect;
        callbacks.on_message = on_message;
        callbacks.on_close = on_close;
        rc = wshub_start(config, &callbacks, NULL, &server);
    }
    wshub_config_free(config);
    if (rc != WSHUB_OK) {
        fprintf(stderr, "chat_server: %s\n", wshub_error_message(rc));
        return 1;
    }
    printf("chat server listening on 127.0.0.1:%u\n", (unsigned)wshub_local_port(server));
    fflush(stdout);

    while (!stop_requested)
        sigsuspend(&old);

    wshub_stop(server); /* on_close runs for every member before this returns */
    printf("stopped\n");
    return 0;
}
