/*
 * adopt_server: a tiny HTTP server that owns its port and serves its own
 * page, and hands WebSocket requests for /ws to wshub (wshub_adopt). wshub
 * runs without a listener of its own: every connection it serves is one
 * this program accepted. The WebSocket side is a one-room chat.
 *
 *   ./build/adopt_server 8080      # then open http://127.0.0.1:8080/
 *
 * Shows: wshub_config_set_bind(config, "") (no listener), wshub_adopt with
 * the bytes already read, the host keeping every other path to itself, and
 * wshub_set_log_callback routing wshub's warnings into the host's log.
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "wshub.h"

static const char page[] =
    "<!doctype html><title>adopt_server</title><h1>adopt_server</h1>\n"
    "<p>This page comes from the host; <code>/ws</code> is served by wshub.</p>\n"
    "<script>const ws = new WebSocket(`ws://${location.host}/ws`);\n"
    "ws.onmessage = (e) => document.body.append(e.data, document.createElement('br'));\n"
    "ws.onopen = () => ws.send('hello from the browser');</script>\n";

static volatile sig_atomic_t stop_requested = 0;

static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

/* wshub's log lines, in the host's own format. */
static void on_log(void *user_data, wshub_log_level level, const char *target, const char *message) {
    (void)user_data;
    fprintf(stderr, "[host] wshub level %d %s: %s\n", (int)level, target, message);
}

static void on_connect(void *user_data, wshub_server *server, uint64_t conn,
                       const wshub_request *request) {
    (void)user_data;
    (void)request;
    if (wshub_join(server, conn, "chat") != WSHUB_OK)
        wshub_close(server, conn, 1011, "cannot join");
}

static void on_message(void *user_data, wshub_server *server, uint64_t conn,
                       const uint8_t *data, size_t length, wshub_message_kind kind) {
    (void)user_data;
    (void)conn;
    wshub_broadcast(server, "chat", data, length, kind, 0); /* to everyone, sender included */
}

/* Reads until the end of the request head (or 8 KiB, or 5 s); its length, or -1. */
static ssize_t read_head(int fd, char *buf, size_t cap) {
    size_t n = 0;
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (n < cap - 1) {
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r <= 0)
            return -1;
        n += (size_t)r;
        buf[n] = '\0';
        if (strstr(buf, "\r\n\r\n") != NULL)
            return (ssize_t)n;
    }
    return -1;
}

static void respond(int fd, const char *status, const char *type, const char *body) {
    char head[256];
    int len = snprintf(head, sizeof head,
                       "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                       status, type, strlen(body));
    if (write(fd, head, (size_t)len) == len)
        (void)!write(fd, body, strlen(body));
}

/* One accepted connection: the host's page, or a hand-over to wshub. */
static void serve(wshub_server *server, int fd) {
    char buf[8192];
    ssize_t n = read_head(fd, buf, sizeof buf);
    if (n < 0) {
        close(fd);
        return;
    }
    if (strncmp(buf, "GET /ws ", 8) == 0 || strncmp(buf, "GET /ws?", 8) == 0) {
        /* wshub answers (101 or a refusal) and owns the socket from here. */
        wshub_result rc = wshub_adopt(server, fd, (const uint8_t *)buf, (size_t)n);
        if (rc == WSHUB_OK)
            return;
        fprintf(stderr, "wshub_adopt: %s\n", wshub_error_message(rc));
        respond(fd, "503 Service Unavailable", "text/plain", "busy\n");
    } else if (strncmp(buf, "GET / ", 6) == 0) {
        respond(fd, "200 OK", "text/html; charset=utf-8", page);
    } else {
        respond(fd, "404 Not Found", "text/plain", "not found\n");
    }
    close(fd);
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 8080;
    wshub_callbacks callbacks = WSHUB_CALLBACKS_INIT;
    wshub_server *server = NULL;
    wshub_config *config;
    wshub_result rc;
    struct sockaddr_in addr;
    socklen_t addr_len = sizeof addr;
    struct sigaction sa;
    int one = 1, lfd;

    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: poll returns EINTR */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    wshub_set_log_callback(WSHUB_LOG_WARN, on_log, NULL);

    /* The host's own listening socket. */
    lfd = socket(AF_INET, SOCK_STREAM, 0);
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(lfd, 128) != 0 ||
        getsockname(lfd, (struct sockaddr *)&addr, &addr_len) != 0) {
        perror("adopt_server: listen");
        return 1;
    }

    /* wshub without a listener: only what serve() hands it. */
    config = wshub_config_new();
    rc = wshub_config_set_bind(config, "");
    callbacks.on_connect = on_connect;
    callbacks.on_message = on_message;
    if (rc == WSHUB_OK)
        rc = wshub_start(config, &callbacks, NULL, &server);
    wshub_config_free(config);
    if (rc != WSHUB_OK) {
        fprintf(stderr, "wshub_start: %s\n", wshub_error_message(rc));
        close(lfd);
        return 1;
    }
    printf("adopt_server listening on 127.0.0.1:%u\n", (unsigned)ntohs(addr.sin_port));
    fflush(stdout);

    while (!stop_requested) {
        struct pollfd p = {lfd, POLLIN, 0};
        int fd;
        if (poll(&p, 1, 200) <= 0)
            continue; /* timeout or EINTR: look at stop_requested */
        fd = accept(lfd, NULL, NULL);
        if (fd >= 0)
            serve(server, fd); /* one request at a time: this host is tiny */
        else if (errno != EINTR && errno != EAGAIN)
            perror("accept");
    }
    close(lfd);
    wshub_stop(server);
    printf("adopt_server stopped\n");
    return 0;
}
