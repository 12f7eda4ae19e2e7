/*
 * poll_loop: wshub in pull mode inside a plain single-threaded poll() loop that
 * also watches stdin. No wshub callback ever runs; every upgrade, connect,
 * message and close is an event this thread takes with wshub_poll_event.
 *
 *   ./build/poll_loop 9001
 *
 * - Upgrades are accepted, except ?deny=1 which is refused with 403.
 * - Every message is echoed to its sender.
 * - Each line typed on stdin is broadcast to every client.
 * - SIGINT or end of stdin stops the server.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "wshub.h"

static int signal_pipe[2] = {-1, -1};

/* The self-pipe trick: the handler only writes a byte that poll() sees. */
static void on_sigint(int sig) {
    int saved = errno;
    char byte = (char)sig;
    if (write(signal_pipe[1], &byte, 1) < 0) {
        /* pipe full: a stop is already pending */
    }
    errno = saved;
}

static void handle_event(wshub_server *server, wshub_event *event) {
    uint64_t conn = wshub_event_conn(event);
    const char *deny;
    const uint8_t *data;
    size_t length = 0;

    switch (wshub_event_get_kind(event)) {
    case WSHUB_EVENT_UPGRADE:
        deny = wshub_request_query_param(wshub_event_request(event), "deny");
        if (deny != NULL && strcmp(deny, "1") == 0) {
            wshub_event_reject(event, 403);
        } else {
            wshub_event_accept(event);
        }
        break;
    case WSHUB_EVENT_CONNECT:
        printf("conn %llu connected from %s\n", (unsigned long long)conn,
               wshub_request_remote_addr(wshub_event_request(event)));
        wshub_join(server, conn, "all");
        break;
    case WSHUB_EVENT_MESSAGE:
        data = wshub_event_data(event, &length);
        wshub_send(server, conn, data, length, wshub_event_message_kind(event));
        break;
    case WSHUB_EVENT_CLOSE:
        printf("conn %llu closed (%u)\n", (unsigned long long)conn,
               (unsigned)wshub_event_close_code(event));
        break;
    default:
        break;
    }
    fflush(stdout);
    wshub_event_free(event);
}

int main(int argc, char **argv) {
    const char *port = argc > 1 ? argv[1] : "9001";
    char address[64];
    char line[1024];
    size_t used = 0;
    wshub_server *server = NULL;
    wshub_config *config;
    wshub_event *event;
    wshub_result rc;
    struct sigaction sa;
    struct pollfd fds[3];
    int event_fd = -1;
    int running = 1;

    if (pipe(signal_pipe) != 0)
        return 1;
    fcntl(signal_pipe[1], F_SETFL, O_NONBLOCK);
    sa.sa_handler = on_sigint;
    sa.sa_flags = 0;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    config = wshub_config_new();
    snprintf(address, sizeof address, "127.0.0.1:%s", port);
    rc = wshub_config_set_bind(config, address);
    if (rc == WSHUB_OK)
        rc = wshub_start_polling(config, &server);
    wshub_config_free(config);
    if (rc == WSHUB_OK)
        rc = wshub_event_fd(server, &event_fd);
    if (rc != WSHUB_OK) {
        fprintf(stderr, "poll_loop: %s\n", wshub_error_message(rc));
        wshub_stop(server);
        return 1;
    }
    printf("poll loop listening on 127.0.0.1:%u\n", (unsigned)wshub_local_port(server));
    fflush(stdout);

    fds[0].fd = event_fd;
    fds[0].events = POLLIN;
    fds[1].fd = STDIN_FILENO;
    fds[1].events = POLLIN;
    fds[2].fd = signal_pipe[0];
    fds[2].events = POLLIN;
    while (running) {
        if (poll(fds, 3, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (fds[0].revents & POLLIN) {
            /* Take everything that is waiting, without blocking. */
            while (wshub_poll_event(server, 0, &event) == WSHUB_OK)
                handle_event(server, event);
        }
        if (fds[1].revents & (POLLIN | POLLHUP)) {
            ssize_t n = read(STDIN_FILENO, line + used, sizeof line - 1 - used);
            if (n <= 0) {
                running = 0; /* end of input */
            } else {
                char *nl;
                used += (size_t)n;
                while ((nl = memchr(line, '\n', used)) != NULL) {
                    size_t len = (size_t)(nl - line);
                    wshub_broadcast(server, "all", (const uint8_t *)line, len, WSHUB_TEXT, 0);
                    memmove(line, nl + 1, used - len - 1);
                    used -= len + 1;
                }
                if (used == sizeof line - 1)
                    used = 0; /* an overlong line is dropped */
            }
        }
        if (fds[2].revents & POLLIN)
            running = 0;
    }

    /* Stop, keep the handle, and drain the close events the shutdown produced. */
    wshub_shutdown(server);
    while (wshub_poll_event(server, 0, &event) == WSHUB_OK)
        handle_event(server, event);
    wshub_stop(server);
    close(signal_pipe[0]);
    close(signal_pipe[1]);
    printf("stopped\n");
    return 0;
}
